/*
 * `hvctl audit tail`: the last audit records, and with -f every new one
 * until Ctrl-C.
 */
import type { Command } from "commander";
import type { ServiceClient } from "../client/index.js";
import { type AuditRecordInfo, AuditService } from "../gen/debvisor/v1/audit_pb.js";
import { type AuditFilterOptions, auditFilterOf, auditFilters } from "./audit-filters.js";
import { printAuditRecords } from "./audit-record-print.js";
import type { CliContext } from "./cli-context.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { watchInterrupts } from "./progress.js";

/**
 * The last `n` matching records, oldest first: one call where the daemon
 * reads them from the end of its trail (`tail`); a daemon from before
 * `tail` answers the first page instead (it has a next page, or it holds
 * fewer records than that page), and is paged through to the end.
 */
export async function lastRecords(
  client: ServiceClient<typeof AuditService>,
  filter: ReturnType<typeof auditFilterOf>,
  n: number,
): Promise<AuditRecordInfo[]> {
  if (n === 0) return [];
  const first = await client.listAuditRecords({ filter, tail: n });
  if (first.nextPageToken === "") return first.records.slice(-n);
  const last = [...first.records];
  let pageToken = first.nextPageToken;
  for (let pages = 0; pageToken !== "" && pages < 10_000; pages++) {
    const page = await client.listAuditRecords({ filter, pageSize: 1000, pageToken });
    last.push(...page.records);
    if (last.length > n) last.splice(0, last.length - n);
    pageToken = page.nextPageToken;
  }
  return last.slice(-n);
}

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
        printAuditRecords(ctx, await lastRecords(client, auditFilterOf(opts), n), true);
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
