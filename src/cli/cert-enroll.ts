import type { Command } from "commander";
import { AgentError, enroll, pinnedFingerprint } from "../client/index.js";
import { serverToAsk } from "./ca-command.js";
import type { CliContext } from "./cli-context.js";
import { UnavailableError, UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";

/**
 * `hvctl cert enroll`: joins this machine to the cluster with a one-time
 * token, as `debvisor-agent enroll` does (the same code): the key is made
 * here and never leaves, the CA is pinned by fingerprint, the certificate is
 * written beside the key; a server presenting a server certificate hvctl
 * knows is revoked (the pinned CA's kept list) is not sent the token. Added
 * to the cert noun by cert-command.ts.
 */
export function addEnrollCommand(cert: Command, cli: () => CliContext): void {
  withExamples(
    cert
      .command("enroll")
      .description(
        "join this machine with a one-time token: make a key, send a CSR, keep the certificate",
      )
      .requiredOption("--token <token>", "the one-time token from `hvctl token create`")
      .requiredOption("--fingerprint <sha256>", "the CA fingerprint `hvctl token create` printed")
      .requiredOption("--out <dir>", "where to write node.key (0600), node.crt and ca.crt")
      .action(async (opts: { token: string; fingerprint: string; out: string }) => {
        const ctx = cli();
        const server = serverToAsk(ctx, "cert enroll");
        try {
          const r = await enroll({
            server,
            token: opts.token,
            caFingerprint: opts.fingerprint,
            dir: opts.out,
            timeoutMs: ctx.timeoutMs,
            verifyServer: ctx.serverCheck(pinnedFingerprint(opts.fingerprint), server).verify,
          });
          ctx.print(
            { serial: r.serial, subject: r.subject, dir: r.files.dir },
            () =>
              `enrolled as ${r.subject} (serial ${r.serial}); key and certificate in ${r.files.dir}\n`,
          );
        } catch (err) {
          if (!(err instanceof AgentError)) throw err;
          if (/fingerprint: expected/.test(err.message))
            throw new UsageError(err.message.replace("--ca-fingerprint", "--fingerprint"));
          if (/pinned fingerprint|token/.test(err.message)) throw err;
          throw new UnavailableError(`cannot enroll: ${err.message}`);
        }
      }),
    "hvctl --server hv-ctl.example:7443 cert enroll --token dvt_... --fingerprint sha256:1f2e... --out /etc/debvisor/node",
  );
}
