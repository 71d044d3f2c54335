/*
 * `hvctl audit tail`: the last audit records, and with -f every new one
 * until Ctrl-C.
 */
import type { Command } from "commander";
import { type AuditRecordInfo, AuditService } from "../gen/debvisor/v1/audit_pb.js";
import { type AuditFilterOptions, auditFilterOf, auditFilters } from "./audit-filters.js";
import { printAuditRecords } from "./audit-record-print.js";
import type { CliContext } from "./cli-context.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { watchInterrupts } from "./progress.js";

/** Adds `tail` to `hvctl audit`. */
export function addAuditTailCommand(audit: Command, cli: () => CliContext): void {
  withExamples(
    auditFilters(
      audit
        .command("tail")
        .description("the last records; with -f, then every new one until interrupted")
        .option("-n, --lines <n>", "how many past records", "20")
        .option("-f, --follow", "keep printing new records"),
    ).action(async (opts: AuditFilterOptions & { lines: string; follow?: boolean }) => {
      const ctx = cli();
      const n = parseWhole("--lines", opts.lines, 0, 1000);
      const client = ctx.client(AuditService);
      if (!opts.follow) {
        const last: AuditRecordInfo[] = [];
        let pageToken = "";
        let pages = 0;
        do {
          const page = await client.listAuditRecords({
            filter: auditFilterOf(opts),
            pageSize: 1000,
            pageToken,
          });
          last.push(...page.records);
          if (last.length > n) last.splice(0, last.length - n);
          pageToken = page.nextPageToken;
        } while (pageToken !== "" && ++pages < 10_000);
        printAuditRecords(ctx, last, true);
        return;
      }
      const abort = new AbortController();
      const interrupts = watchInterrupts({
        signals: ctx.io.signals ?? process,
        tty: false,
        write: ctx.err,
        stopWatching: () => abort.abort(),
      });
      let first = true;
      try {
        for await (const r of client.followAuditRecords(
          { filter: auditFilterOf(opts), backlog: n },
          { signal: abort.signal },
        )) {
          printAuditRecords(ctx, [r], first);
          first = false;
        }
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      } finally {
        interrupts.dispose();
      }
    }),
    "hvctl audit tail -n 50",
    "hvctl audit tail -f --code PERMISSION_DENIED",
  );
}
