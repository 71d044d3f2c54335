#!/usr/bin/env node
import { Command } from "commander";
import { AgentError, enroll, renew } from "../agent/index.js";
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
      const r = await enroll({
        server: opts.server,
        token,
        caFingerprint: opts.caFingerprint,
        dir: opts.dir,
        tlsServerName: opts.tlsServerName,
      });
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
    const r = await renew(opts);
    process.stdout.write(`renewed: certificate ${r.serial} in ${r.files.cert}\n`);
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
