import { readFileSync } from "node:fs";
import { Command } from "commander";
import { verifyAuditFiles } from "../audit/index.js";
import type { CliContext } from "./cli-context.js";

/** `hvctl audit ...`: the audit trail. */
export function auditCommand(cli: () => CliContext): Command {
  const audit = new Command("audit").description("the audit trail");
  audit
    .command("verify")
    .description(
      "check audit files (oldest first) for edited, missing or reordered records (exit 1 if broken)",
    )
    .argument("<files...>", "audit files, oldest first (rotated files, then the current one)")
    .option("--key <file>", "the HMAC key file, when the trail is keyed")
    .action((files: string[], opts: { key?: string }) => {
      const ctx = cli();
      const r = verifyAuditFiles(
        files,
        opts.key === undefined ? undefined : readFileSync(opts.key),
      );
      if (ctx.format === "json") ctx.out(`${JSON.stringify(r, null, 2)}\n`);
      else if (r.ok) ctx.out(`intact: ${r.records} records in ${r.files} file(s)\n`);
      else
        ctx.out(
          `BROKEN at ${r.problem?.file}:${r.problem?.line}: ${r.problem?.what} (${r.records} records verified before it)\n`,
        );
      if (!r.ok) ctx.setExitCode(1);
    });
  return audit;
}
