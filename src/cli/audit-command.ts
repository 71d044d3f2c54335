/*
 * `hvctl audit`: the audit trail. verify and search are here; tail is
 * audit-tail-command.ts, the shared filters audit-filters.ts and the
 * printing audit-record-print.ts.
 */
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { isTornTail, verifyAuditFiles } from "../audit/index.js";
import { AuditService } from "../gen/debvisor/v1/audit_pb.js";
import { type AuditFilterOptions, auditFilterOf, auditFilters } from "./audit-filters.js";
import { printAuditRecords } from "./audit-record-print.js";
import { addAuditTailCommand } from "./audit-tail-command.js";
import type { CliContext } from "./cli-context.js";
import { EXIT } from "./cli-errors.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { allPages } from "./pages.js";

/** `hvctl audit ...`: the audit trail. */
export function auditCommand(cli: () => CliContext): Command {
  const audit = new Command("audit").description("the audit trail");
  withExamples(audit, "hvctl audit tail -f", "hvctl audit search --code PERMISSION_DENIED");
  withExamples(
    audit
      .command("verify")
      .description(
        "check audit files (oldest first) for edited, missing or reordered records (exit 1 if broken)",
      )
      .argument("<files...>", "audit files, oldest first (rotated files, then the current one)")
      .option("--key <file>", "the HMAC key file, when the trail is keyed")
      .action((files: string[], opts: { key?: string }) => {
        const ctx = cli();
        // `audit.log.*` in a shell also names the torn tails a restart moved aside: no part of the chain.
        const torn = files.filter(isTornTail);
        const r = verifyAuditFiles(
          files.filter((f) => !isTornTail(f)),
          opts.key === undefined ? undefined : readFileSync(opts.key),
        );
        const skipped =
          torn.length === 0
            ? ""
            : `skipped ${torn.length} torn tail(s) moved aside at a restart, no part of the chain: ${torn.join(", ")}\n`;
        ctx.print({ ...r, skippedTornTails: torn }, () =>
          r.ok
            ? `intact: ${r.records} records in ${r.files} file(s)\n${skipped}`
            : `BROKEN at ${r.problem?.file}:${r.problem?.line}: ${r.problem?.what} (${r.records} records verified before it)\n${skipped}`,
        );
        if (!r.ok) ctx.setExitCode(EXIT.other);
      }),
    "hvctl audit verify /var/log/debvisor/rpc-audit.log.2026-11-20T00-00-00-000Z /var/log/debvisor/rpc-audit.log",
    "hvctl audit verify --key /etc/debvisor/audit.key /var/log/debvisor/rpc-audit.log",
  );
  withExamples(
    auditFilters(
      audit
        .command("search")
        .description("audit records matching filters, oldest first")
        .option("--limit <n>", "at most this many records", "100"),
    ).action(async (opts: AuditFilterOptions & { limit: string }) => {
      const ctx = cli();
      const limit = parseWhole("--limit", opts.limit, 1, 100_000);
      const client = ctx.client(AuditService);
      const records = await allPages(
        (pageToken) =>
          client
            .listAuditRecords({
              filter: auditFilterOf(opts),
              pageSize: Math.min(1000, limit),
              pageToken,
            })
            .then((r) => ({ items: r.records, next: r.nextPageToken })),
        limit,
      );
      printAuditRecords(ctx, records, true);
    }),
    "hvctl audit search --code PERMISSION_DENIED --since 2026-11-22T00:00:00Z",
    "hvctl audit search --principal ci --method CreateApiKey -o json | jq .requestId",
  );
  addAuditTailCommand(audit, cli);
  return audit;
}
