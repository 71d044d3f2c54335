import { Command } from "commander";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { CliContext } from "./cli-context.js";
import { parseDuration } from "./duration.js";

/** `hvctl token ...`: one-time enrollment tokens for new nodes. */
export function tokenCommand(cli: () => CliContext): Command {
  const token = new Command("token").description("enrollment tokens for new nodes");
  token
    .command("create")
    .description("a single-use token for one node; prints it once, with the CA fingerprint to pin")
    .argument("<node>", "the node name its certificate will carry")
    .option("--ttl <duration>", "how long the token stays usable (default 1h, at most 7d)")
    .action(async (node: string, opts: { ttl?: string }) => {
      const ctx = cli();
      const ttlMs = opts.ttl === undefined ? 0 : parseDuration("--ttl", opts.ttl);
      const r = await ctx
        .client(EnrollmentService)
        .createEnrollmentToken(
          { nodeName: node, ttlSeconds: BigInt(Math.ceil(ttlMs / 1000)) },
          { timeoutMs: ctx.timeoutMs },
        );
      const expires =
        r.expires === undefined ? "" : new Date(Number(r.expires.seconds) * 1000).toISOString();
      if (ctx.format === "json") {
        ctx.out(
          `${JSON.stringify({ token: r.token, node: r.nodeName, expires, caFingerprint: r.caFingerprint }, null, 2)}\n`,
        );
        return;
      }
      ctx.out(`${r.token}\n`);
      process.stderr.write(
        `Token for ${r.nodeName}, single use, valid until ${expires}. Shown once. On the node:\n` +
          `  DEBVISOR_ENROLL_TOKEN=<token> debvisor-agent enroll --server <this server> --ca-fingerprint ${r.caFingerprint}\n`,
      );
    });
  return token;
}
