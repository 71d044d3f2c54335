#!/usr/bin/env node
import { join } from "node:path";
import { Command } from "commander";
import {
  AgentError,
  applyFaultCommand,
  createAgentLogger,
  describeFaults,
  enroll,
  loadAgentConfig,
  lockAgentDirectory,
  openRevokedServers,
  REVOKED_SERVERS_FILE,
  readLocalStatus,
  renew,
  runAgent,
} from "../agent/index.js";
import { hideIpSniWarning, packageVersion } from "../client/index.js";

const DEFAULT_DIR = "/var/lib/debvisor-agent";

const program = new Command("debvisor-agent")
  .description("DebVisor node agent")
  .version(packageVersion());

program
  .command("enroll")
  .description(
    "join the cluster: one-time token + pinned CA fingerprint; the key is made here and never leaves",
  )
  .requiredOption("--server <host:port>", "debvisor-rpcd address")
  .option(
    "--token <token>",
    "the enrollment token (or $DEBVISOR_ENROLL_TOKEN, which keeps it out of ps)",
  )
  .requiredOption(
    "--ca-fingerprint <sha256:hex>",
    "the cluster CA's fingerprint, from hvctl token create",
  )
  .option("--dir <dir>", "where to keep node.key, node.crt and ca.crt", DEFAULT_DIR)
  .option("--tls-server-name <name>", "name to verify the server certificate against")
  .action(
    async (opts: {
      server: string;
      token?: string;
      caFingerprint: string;
      dir: string;
      tlsServerName?: string;
    }) => {
      const token = opts.token ?? process.env.DEBVISOR_ENROLL_TOKEN;
      if (token === undefined || token === "")
        throw new AgentError("--token or $DEBVISOR_ENROLL_TOKEN is required");
      // A new identity under a running agent would be a node changing who it is mid-run.
      const unlock = lockAgentDirectory(opts.dir);
      // Enrolled again (an expired certificate): a server it was told is revoked gets no token.
      const revoked = openRevokedServers({
        path: join(opts.dir, REVOKED_SERVERS_FILE),
        log: createAgentLogger("error"),
      });
      const r = await enroll({
        server: opts.server,
        token,
        caFingerprint: opts.caFingerprint,
        dir: opts.dir,
        tlsServerName: opts.tlsServerName,
        verifyServer: revoked.guard(opts.server).verify,
      }).finally(unlock);
      process.stdout.write(
        `enrolled as ${r.subject}: certificate ${r.serial} in ${r.files.cert}\n`,
      );
    },
  );

program
  .command("renew")
  .description("renew this node's certificate with a new key, over mTLS with the current one")
  .requiredOption("--server <host:port>", "debvisor-rpcd address")
  .option("--dir <dir>", "the agent directory", DEFAULT_DIR)
  .option("--tls-server-name <name>", "name to verify the server certificate against")
  .action(async (opts: { server: string; dir: string; tlsServerName?: string }) => {
    // A server presenting a certificate the control plane told this node is revoked is refused.
    const revoked = openRevokedServers({
      path: join(opts.dir, REVOKED_SERVERS_FILE),
      log: createAgentLogger("error"),
    });
    const r = await renew({ ...opts, verifyServer: revoked.guard(opts.server).verify });
    process.stdout.write(`renewed: certificate ${r.serial} in ${r.files.cert}\n`);
  });

/** Flags shared by run and status, shaped like the agent's configuration schema. */
interface AgentFlags {
  config?: string;
  dir?: string;
  server?: string[];
  tlsServerName?: string;
  driver?: string;
  uri?: string;
  simVms?: string;
  simActionMs?: string;
  simSharedDir?: string;
  storage?: string;
  simDatasetBytes?: string;
  simMigrationMs?: string;
  logLevel?: string;
}

function configFrom(opts: AgentFlags) {
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return loadAgentConfig({
    configPath: opts.config,
    env: process.env,
    flags: {
      dir: opts.dir,
      servers: opts.server,
      tlsServerName: opts.tlsServerName,
      driver: { kind: opts.driver, uri: opts.uri },
      sim: {
        vms: num(opts.simVms),
        actionMs: num(opts.simActionMs),
        migrationMs: num(opts.simMigrationMs),
        sharedDir: opts.simSharedDir,
      },
      storage: { kind: opts.storage, simDatasetBytes: num(opts.simDatasetBytes) },
      logLevel: opts.logLevel,
    },
  });
}

const withAgentFlags = (c: Command) =>
  c
    .option(
      "--config <file>",
      "configuration file (YAML; default /etc/debvisor/agent.yaml if present)",
    )
    .option("--dir <dir>", "the agent directory (identity, journal, simulation)")
    .option("--driver <kind>", "the hypervisor: libvirt or sim")
    .option("--uri <uri>", "libvirt connection URI (default qemu:///system)")
    .option("--sim-vms <n>", "sim: domains generated on first start")
    .option("--sim-action-ms <ms>", "sim: how long a start or stop takes")
    .option("--sim-shared-dir <dir>", "sim: the cluster's shared storage (disk locks, definitions)")
    .option("--storage <kind>", "the node's storage: none, sim, zfs or rbd (default none)")
    .option("--sim-dataset-bytes <n>", "sim storage: size of each dataset made on first start")
    .option("--sim-migration-ms <ms>", "sim: how long a migration from this node takes");

withAgentFlags(
  program
    .command("run")
    .description(
      "run the node agent: one mTLS stream to the control plane, operations on this node's hypervisor",
    )
    .option(
      "--server <host:port...>",
      "control-plane addresses, tried in turn (or $DEBVISOR_AGENT_SERVERS, comma-separated)",
    )
    .option("--tls-server-name <name>", "name to verify server certificates against")
    .option("--log-level <level>", "trace, debug, info, warn, error")
    .option(
      "--exit-with-stdin",
      "stop when stdin closes (a supervisor that dies takes its agents with it)",
    ),
).action(async (opts: AgentFlags & { exitWithStdin?: boolean }) => {
  if (opts.exitWithStdin) {
    process.stdin.resume();
    process.stdin.once("end", () => process.kill(process.pid, "SIGTERM"));
  }
  await runAgent(configFrom(opts), process.env);
  process.stdin.destroy();
});

withAgentFlags(
  program
    .command("status")
    .description("print this node's local domains, as its hypervisor reports them")
    .option("-o, --output <format>", "json or table", "table"),
).action(async (opts: AgentFlags & { output: string }) => {
  const status = await readLocalStatus(configFrom(opts));
  if (opts.output === "json") {
    process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
  } else {
    for (const d of status.domains) process.stdout.write(`${d.id}\t${d.state}\t${d.vcpus} vcpu\n`);
    for (const d of status.storage?.datasets ?? [])
      process.stdout.write(`${d.dataset}\t${d.snapshots.length} snapshots\n`);
  }
});

program
  .command("fault")
  .description(
    "inject a fault into the agent running in --dir, at once: partition, heal, fail-migration-at PERCENT, hold-migration-at PERCENT, clock-offset MS, clear; revive: dev mode's daemon restarts its dead agent",
  )
  .argument(
    "<fault>",
    "partition | heal | fail-migration-at | hold-migration-at | clock-offset | clear | revive",
  )
  .argument("[value]", "PERCENT for fail-migration-at and hold-migration-at, MS for clock-offset")
  .option("--dir <dir>", "the agent directory", DEFAULT_DIR)
  .addHelpText(
    "after",
    `
Examples:
  debvisor-agent fault --dir .debvisor/nodes/node-03 partition       # cut its stream; heal to restore
  debvisor-agent fault --dir .debvisor/nodes/node-01 fail-migration-at 40
  debvisor-agent fault --dir .debvisor/nodes/node-02 clock-offset 5000   # reported timestamps +5 s
  debvisor-agent fault --dir .debvisor/nodes/node-03 clear
  kill -STOP $(cat .debvisor/nodes/node-03/agent.pid)                # pause it (kill -CONT resumes)
  kill -9 $(cat .debvisor/nodes/node-03/agent.pid)                   # kill it; then, in dev mode:
  debvisor-agent fault --dir .debvisor/nodes/node-03 revive          # the dev daemon starts it again`,
  )
  .action((fault: string, value: string | undefined, opts: { dir: string }) => {
    const now = applyFaultCommand(opts.dir, fault, value);
    process.stdout.write(
      fault === "revive"
        ? `${opts.dir}: revive asked (dev mode's daemon starts the agent again if it is dead)\n`
        : `${opts.dir}: ${describeFaults(now)}\n`,
    );
  });

hideIpSniWarning();

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: number; details?: string; message?: string };
  const message =
    typeof e.code === "number" && typeof e.details === "string"
      ? e.details
      : (e.message ?? String(err));
  process.stderr.write(`debvisor-agent: ${message}\n`);
  process.exit(err instanceof AgentError ? 2 : 1);
});
