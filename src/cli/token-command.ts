import { Command } from "commander";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { CliContext } from "./cli-context.js";
import { parseDuration } from "./duration.js";
import { withExamples } from "./help-text.js";
import { isoTime } from "./output.js";

/** `hvctl token ...`: one-time enrollment tokens for new nodes. */
export function tokenCommand(cli: () => CliContext): Command {
  const token = new Command("token").description("enrollment tokens for new nodes");
  withExamples(token, "hvctl token create hv07");
  withExamples(
    token
      .command("create")
      .description(
        "a single-use token for one node; prints it once, with the CA fingerprint to pin",
      )
      .argument("<node>", "the node name its certificate will carry")
      .option("--ttl <duration>", "how long the token stays usable (default 1h, at most 7d)")
      .action(async (node: string, opts: { ttl?: string }) => {
        const ctx = cli();
        const ttlMs = opts.ttl === undefined ? 0 : parseDuration("--ttl", opts.ttl);
        const r = await ctx
          .client(EnrollmentService)
          .createEnrollmentToken({ nodeName: node, ttlSeconds: BigInt(Math.ceil(ttlMs / 1000)) });
        const expires = isoTime(r.expires);
        ctx.print(
          { token: r.token, node: r.nodeName, expires, caFingerprint: r.caFingerprint },
          () => {
            ctx.err(
              `Token for ${r.nodeName}, single use, valid until ${expires}. Shown once. On the node:\n` +
                `  DEBVISOR_ENROLL_TOKEN=<token> debvisor-agent enroll --server ${ctx.connection().server} --ca-fingerprint ${r.caFingerprint} --dir /var/lib/debvisor-agent\n`,
            );
            return `${r.token}\n`;
          },
        );
      }),
    "hvctl token create hv07",
    "hvctl token create hv07 --ttl 15m -o json",
  );
  return token;
}
