import { Command } from "commander";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { parseDuration } from "./duration.js";
import { withExamples } from "./help-text.js";
import { isoTime } from "./output.js";

/** `hvctl token ...`: one-time enrollment tokens for new nodes. */
export function tokenCommand(cli: () => CliContext): Command {
  const token = new Command("token").description("enrollment tokens for new nodes");
  withExamples(token, "hvctl token create hv07", "hvctl token create --node hv07 --ttl 1h");
  withExamples(
    token
      .command("create")
      .description(
        "a single-use token for one node; prints it once, with the CA fingerprint to pin",
      )
      .argument("[node]", "the node name its certificate will carry (or --node)")
      .option("--node <name>", "the node name (the same as the argument)")
      .option("--ttl <duration>", "how long the token stays usable (default 1h, at most 7d)")
      .action(async (arg: string | undefined, opts: { ttl?: string; node?: string }) => {
        const ctx = cli();
        if (arg !== undefined && opts.node !== undefined && arg !== opts.node)
          throw new UsageError(`token create: two node names, "${arg}" and --node "${opts.node}"`);
        const node = arg ?? opts.node;
        if (node === undefined) throw new UsageError("token create: which node? give its name");
        const ttlMs = opts.ttl === undefined ? 0 : parseDuration("--ttl", opts.ttl);
        const r = await ctx
          .client(EnrollmentService)
          .createEnrollmentToken({ nodeName: node, ttlSeconds: BigInt(Math.ceil(ttlMs / 1000)) });
        const expires = isoTime(r.expires);
        ctx.print(
          { token: r.token, node: r.nodeName, expires, caFingerprint: r.caFingerprint },
          () => {
            // The token first, then what it is: "above" must be true on a terminal, where both streams meet.
            ctx.out(`${r.token}\n`);
            ctx.err(
              `The token above is for ${r.nodeName}, single use, valid until ${expires}, and shown once. On the node:\n` +
                `  DEBVISOR_ENROLL_TOKEN=<token> debvisor-agent enroll --server ${ctx.connection().server} --ca-fingerprint ${r.caFingerprint} --dir /var/lib/debvisor-agent\n`,
            );
            return "";
          },
        );
      }),
    "hvctl token create hv07",
    "hvctl token create hv07 --ttl 15m -o json",
  );
  return token;
}
