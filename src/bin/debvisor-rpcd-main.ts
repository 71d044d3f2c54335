#!/usr/bin/env node
import { X509Certificate } from "node:crypto";
import {
  chmodSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Command, Option } from "commander";
import { packageVersion } from "../client/index.js";
import { silentLogger } from "../core/index.js";
import { createCertificateAuthority, KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/index.js";
import {
  ConfigError,
  type ConfigSources,
  exportStore,
  importStore,
  loadConfig,
  openStore,
  startDaemon,
  TransferError,
} from "../server/index.js";

interface Flags {
  config?: string;
  dev?: boolean;
  devAgents?: boolean;
  dataDir?: string;
  listen?: string;
  metricsListen?: string;
  logLevel?: string;
  logFormat?: string;
  exitWithStdin?: boolean;
}

const program = new Command("debvisor-rpcd")
  .description("DebVisor RPC daemon: the debvisor.v1 gRPC API over TLS")
  .version(packageVersion())
  .option("--config <file>", "configuration file (YAML)", undefined)
  .option("--dev", "development mode: own CA and certificates, simulated cluster")
  .option(
    "--dev-agents",
    "dev mode with each simulated node a debvisor-agent process (what npm start runs)",
  )
  .option("--data-dir <dir>", "dev mode data directory (default ./.debvisor)")
  .option("--listen <host:port>", "gRPC listen address (default 127.0.0.1:7443)")
  .option(
    "--metrics-listen <host:port>",
    "metrics and health HTTP address (default 127.0.0.1:9464)",
  )
  .option("--log-level <level>", "trace, debug, info, warn, error, fatal or silent")
  .option(
    "--log-format <format>",
    "json, pretty, or auto: pretty on a terminal, JSON otherwise (default auto)",
  )
  .option(
    "--exit-with-stdin",
    "shut down when stdin closes (a supervisor or test that dies takes the daemon with it)",
  )
  .action(async (flags: Flags) => {
    const sources = configSources(flags);
    let daemon: Awaited<ReturnType<typeof startDaemon>>;
    try {
      const config = loadConfig(sources);
      daemon = await startDaemon({
        config,
        reloadConfig: () => loadConfig(sources),
        env: process.env,
      });
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`debvisor-rpcd: configuration error:\n${err.message}\n`);
        process.exit(2);
      }
      process.stderr.write(`debvisor-rpcd: failed to start: ${(err as Error).message}\n`);
      process.exit(1);
    }
    if (daemon.dev !== undefined)
      printDevBanner(
        daemon.grpcAddress,
        daemon.httpAddress,
        daemon.dev.contextFile,
        daemon.panelUrl === undefined
          ? undefined
          : { url: daemon.panelUrl, password: daemon.devPanelPassword },
        daemon.devAgents?.nodes(),
      );
    let stopping = false;
    const stop = (signal: string) => {
      // A second signal (an impatient operator) leaves the drain and the unwinding to finish,
      // bounded by shutdown.drainTimeoutMs: by default it would kill the daemon mid-way.
      if (stopping) {
        process.stderr.write(
          `debvisor-rpcd: ${signal}: already shutting down (calls drain for up to shutdown.drainTimeoutMs; SIGKILL stops at once)\n`,
        );
        return;
      }
      stopping = true;
      daemon.shutdown(signal).then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    if (flags.exitWithStdin === true) {
      process.stdin.resume();
      process.stdin.once("end", () => stop("stdin closed"));
    }
    process.on("SIGHUP", () => void daemon.reload());
  });

/** Maps the flags onto configuration sources. */
function configSources(flags: Flags): ConfigSources {
  const overrides: Record<string, unknown> = {
    listen: flags.listen,
    dev:
      flags.dev || flags.dataDir !== undefined || flags.devAgents
        ? {
            enabled: (flags.dev ?? false) || (flags.devAgents ?? false),
            dataDir: flags.dataDir,
            agents: flags.devAgents ? { enabled: true } : undefined,
          }
        : undefined,
    metrics: flags.metricsListen === undefined ? undefined : { listen: flags.metricsListen },
    log:
      flags.logLevel === undefined && flags.logFormat === undefined
        ? undefined
        : { level: flags.logLevel, format: flags.logFormat },
  };
  return { configPath: flags.config, env: process.env, overrides };
}

/** Runs a store command with the configured store open; exit 2 for configuration, 1 for other failures. */
async function withStore(
  flags: Flags,
  run: (store: ReturnType<typeof openStore>) => Promise<string>,
): Promise<void> {
  let store: ReturnType<typeof openStore> | undefined;
  try {
    store = openStore(loadConfig(configSources(flags)), silentLogger);
    process.stderr.write(`${await run(store)}\n`);
    await store.close();
  } catch (err) {
    await store?.close().catch(() => {});
    const configProblem = err instanceof ConfigError;
    const message =
      configProblem || err instanceof TransferError
        ? err.message
        : String((err as Error).cause ?? (err as Error).message);
    process.stderr.write(`debvisor-rpcd: ${message}\n`);
    process.exit(configProblem ? 2 : 1);
  }
}

const store = program
  .command("store")
  .description("move the state store's contents between backends");
store
  .command("export")
  .description("write every key (JSON lines) to --out or stdout")
  .option("--out <file>", "output file (default stdout)")
  .action(async (opts: { out?: string }, cmd: Command) => {
    await withStore(cmd.optsWithGlobals<Flags>(), async (s) => {
      const out =
        opts.out === undefined ? process.stdout : createWriteStream(opts.out, { mode: 0o600 });
      const { records, leased } = await exportStore(s, (line) => {
        if (out.write(line)) return undefined;
        return new Promise<void>((resolve) => out.once("drain", () => resolve()));
      });
      if (out !== process.stdout)
        await new Promise<void>((resolve, reject) =>
          (out as ReturnType<typeof createWriteStream>).end((err?: Error | null) =>
            err ? reject(err) : resolve(),
          ),
        );
      return `exported ${records} keys (${leased} leased keys left out)`;
    });
  });
store
  .command("import")
  .description("read an export from --in or stdin into an empty store")
  .option("--in <file>", "input file (default stdin)")
  .option("--overwrite", "write even if the store already holds keys")
  .action(async (opts: { in?: string; overwrite?: boolean }, cmd: Command) => {
    await withStore(cmd.optsWithGlobals<Flags>(), async (s) => {
      const input = opts.in === undefined ? process.stdin : createReadStream(opts.in);
      const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
      const { records } = await importStore(s, lines, { overwrite: opts.overwrite });
      return `imported ${records} keys`;
    });
  });

const caCommand = program.command("ca").description("the cluster certificate authority");
caCommand
  .command("init")
  .description("create a cluster CA: ca.crt and ca.key (0600) in --out")
  .requiredOption("--out <dir>", "directory for ca.crt and ca.key (created 0700)")
  .option("--cn <name>", "the CA's common name", "DebVisor Cluster CA")
  .addOption(
    new Option("--algorithm <alg>", "key algorithm")
      .choices([...KEY_ALGORITHMS])
      .default("ecdsa-p256"),
  )
  .option("--days <n>", "validity in days", "3650")
  .option("--force", "overwrite an existing CA")
  .action(
    async (opts: {
      out: string;
      cn: string;
      algorithm: KeyAlgorithm;
      days: string;
      force?: boolean;
    }) => {
      const days = Number(opts.days);
      if (!Number.isInteger(days) || days < 1 || days > 36_500) {
        process.stderr.write("debvisor-rpcd: --days: a whole number from 1 to 36500\n");
        process.exit(2);
      }
      const certPath = join(opts.out, "ca.crt");
      const keyPath = join(opts.out, "ca.key");
      if (!opts.force && (existsSync(certPath) || existsSync(keyPath))) {
        process.stderr.write(
          `debvisor-rpcd: ${opts.out} already holds a CA (use --force to replace it)\n`,
        );
        process.exit(1);
      }
      mkdirSync(opts.out, { recursive: true, mode: 0o700 });
      const ca = await createCertificateAuthority({
        commonName: opts.cn,
        algorithm: opts.algorithm,
        validityDays: days,
      });
      writeFileSync(keyPath, ca.keyPem, { mode: 0o600 });
      chmodSync(keyPath, 0o600);
      writeFileSync(certPath, ca.certPem, { mode: 0o644 });
      const fingerprint = new X509Certificate(ca.certPem).fingerprint256
        .replace(/:/g, "")
        .toLowerCase();
      process.stdout.write(
        `created ${certPath} and ${keyPath} (${opts.algorithm}, ${days} days)\nfingerprint sha256:${fingerprint}\n`,
      );
    },
  );

/** A path relative to the working directory when it is under it. */
function relative(path: string): string {
  return path.startsWith(`${process.cwd()}/`) ? path.slice(process.cwd().length + 1) : path;
}

function printDevBanner(
  grpcAddress: string,
  httpAddress: string | undefined,
  contextFile: string,
  panel?: { url: string; password: string | undefined },
  agents?: { id: string; dir: string; pid: number }[],
): void {
  const rel = contextFile.startsWith(`${process.cwd()}/`)
    ? contextFile.slice(process.cwd().length + 1)
    : contextFile;
  process.stderr.write(
    `${[
      "",
      agents === undefined
        ? "DebVisor RPC dev cluster is up (embedded simulation of its nodes, development CA)."
        : `DebVisor RPC dev cluster is up: the daemon plus ${agents.length} debvisor-agent processes, each a simulated node (development CA).`,
      `  gRPC over TLS (mTLS):  ${grpcAddress}`,
      httpAddress === undefined
        ? ""
        : `  metrics and health:    http://${httpAddress}/metrics  /healthz  /readyz`,
      `  hvctl context:         ${rel}`,
      ...(agents ?? []).map(
        (a) => `  node ${a.id}:          agent pid ${a.pid}, directory ${relative(a.dir)}`,
      ),
      panel === undefined ? "" : `  web panel:             ${panel.url}`,
      panel?.password === undefined
        ? ""
        : `                         user admin, one-time password ${panel.password} (new on every start)`,
      "",
      "Try next, in another terminal:",
      `  npm exec --no -- hvctl --config ${rel} node list`,
      `  npm exec --no -- hvctl --config ${rel} node list -o json`,
      httpAddress === undefined ? "" : `  curl -s http://${httpAddress}/readyz`,
      ...(agents === undefined || agents[0] === undefined
        ? []
        : [
            `  npm exec --no -- hvctl --config ${rel} migration run --vm vm-001 --target node-02`,
            `  npm exec --no -- debvisor-agent status --dir ${relative(agents[0].dir)} --driver sim -o json`,
            `  npm exec --no -- debvisor-agent fault --dir ${relative(agents[0].dir)} partition   # then: heal`,
            `  kill -STOP $(cat ${relative(agents[0].dir)}/agent.pid)   # pause the node; kill -CONT resumes`,
          ]),
      "",
    ]
      .filter((l, i, a) => l !== "" || a[i - 1] !== "")
      .join("\n")}\n`,
  );
}

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`debvisor-rpcd: ${(err as Error).message}\n`);
  process.exit(1);
});
