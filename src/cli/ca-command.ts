import { X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { Command } from "commander";
import { AgentError, caFingerprint, fetchPinnedCa, readContextFile } from "../client/index.js";
import type { CliContext } from "./cli-context.js";
import { UnavailableError, UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { renderFields } from "./output.js";

/** What an operator checks about a CA: who, how long, and the fingerprint nodes pin. */
function describeCa(pem: string) {
  const c = new X509Certificate(pem);
  return {
    subject: c.subject.replace(/\n/g, ", "),
    fingerprint: caFingerprint(pem),
    notBefore: new Date(c.validFrom).toISOString(),
    notAfter: new Date(c.validTo).toISOString(),
    pem,
  };
}

/** `hvctl ca ...`: the cluster CA as this client trusts it. */
export function caCommand(cli: () => CliContext): Command {
  const ca = new Command("ca").description("the cluster certificate authority");
  withExamples(ca, "hvctl ca show", "hvctl ca fetch --fingerprint sha256:... --out ca.pem");
  withExamples(
    ca
      .command("show")
      .description("the CA the current context trusts, with the fingerprint nodes pin to enroll")
      .option("--pem", "print only the certificate, PEM")
      .action((opts: { pem?: boolean }) => {
        const ctx = cli();
        const pem = ctx.connection().caPem;
        if (pem === "") throw new UsageError(`context "${ctx.connection().name}" has no CA`);
        const d = describeCa(pem);
        if (opts.pem === true) {
          ctx.out(pem.endsWith("\n") ? pem : `${pem}\n`);
          return;
        }
        ctx.print(d, () =>
          renderFields([
            ["subject", d.subject],
            ["fingerprint", d.fingerprint],
            ["not before", d.notBefore],
            ["not after", d.notAfter],
          ]),
        );
      }),
    "hvctl ca show",
    "hvctl ca show --pem > ca.pem",
  );
  withExamples(
    ca
      .command("fetch")
      .description(
        "get the CA from a server's TLS chain, accepted only if its fingerprint is the one you were given",
      )
      .requiredOption(
        "--fingerprint <sha256>",
        "sha256:HEX, as hvctl ca show or token create prints it",
      )
      .option("--out <file>", "write the PEM here instead of stdout")
      .action(async (opts: { fingerprint: string; out?: string }) => {
        const ctx = cli();
        const server = serverToAsk(ctx, "ca fetch");
        let pem: string;
        try {
          pem = await fetchPinnedCa(server, opts.fingerprint, ctx.timeoutMs);
        } catch (err) {
          if (!(err instanceof AgentError)) throw err;
          if (/fingerprint: expected/.test(err.message))
            throw new UsageError(err.message.replace("--ca-fingerprint", "--fingerprint"));
          if (/pinned fingerprint/.test(err.message)) throw err;
          throw new UnavailableError(`cannot fetch the CA: ${err.message}`);
        }
        const d = describeCa(pem);
        if (opts.out !== undefined) writeFileSync(opts.out, pem, { mode: 0o644 });
        if (opts.out === undefined && ctx.format !== "json" && ctx.format !== "yaml") ctx.out(pem);
        else ctx.print(d, () => `${d.subject} (${d.fingerprint}) written to ${opts.out}\n`);
      }),
    "hvctl ca fetch --server hv-ctl.example:7443 --fingerprint sha256:1f2e... --out ~/.config/debvisor/ca.pem",
  );
  return ca;
}

/**
 * The server a command that needs no credential talks to: --server, then
 * DEBVISOR_SERVER, then the current context's; a UsageError naming `command`
 * when none is set.
 */
export function serverToAsk(ctx: CliContext, command: string): string {
  const env = ctx.io.env.DEBVISOR_SERVER;
  const server = ctx.options.server ?? (env === "" ? undefined : env) ?? currentServer(ctx);
  if (server === undefined)
    throw new UsageError(`${command}: which server? give --server HOST:PORT`);
  return server;
}

function currentServer(ctx: CliContext): string | undefined {
  try {
    readContextFile(ctx.configPath);
    return ctx.contextEntry().server;
  } catch {
    return undefined;
  }
}
