import { readFileSync } from "node:fs";
import { Command } from "commander";
import { stringify as stringifyYaml } from "yaml";
import { verifyAuditFiles } from "../audit/index.js";
import {
  type AuditRecordInfo,
  AuditRecordInfoSchema,
  AuditService,
} from "../gen/debvisor/v1/audit_pb.js";
import type { CliContext } from "./cli-context.js";
import { EXIT, UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { messageJson, renderTable } from "./output.js";
import { allPages } from "./pages.js";
import { watchInterrupts } from "./progress.js";

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
        const r = verifyAuditFiles(
          files,
          opts.key === undefined ? undefined : readFileSync(opts.key),
        );
        ctx.print(r, () =>
          r.ok
            ? `intact: ${r.records} records in ${r.files} file(s)\n`
            : `BROKEN at ${r.problem?.file}:${r.problem?.line}: ${r.problem?.what} (${r.records} records verified before it)\n`,
        );
        if (!r.ok) ctx.setExitCode(EXIT.other);
      }),
    "hvctl audit verify /var/log/debvisor/rpc-audit.log.2026-11-20T00-00-00-000Z /var/log/debvisor/rpc-audit.log",
    "hvctl audit verify --key /etc/debvisor/audit.key /var/log/debvisor/rpc-audit.log",
  );
  const filters = (c: Command) =>
    c
      .option("--principal <name>", "only this principal")
      .option("--event <event>", "rpc, rpc.request, audit.start, audit.recovered")
      .option("--method <name>", "only this method, like RegisterNode")
      .option("--code <code>", "only this gRPC code, like PERMISSION_DENIED")
      .option("--since <time>", "ISO 8601, inclusive")
      .option("--until <time>", "ISO 8601, inclusive");
  type FilterOpts = {
    principal?: string;
    event?: string;
    method?: string;
    code?: string;
    since?: string;
    until?: string;
  };
  const filterOf = (o: FilterOpts) => ({
    principal: o.principal ?? "",
    event: o.event ?? "",
    method: o.method ?? "",
    code: o.code ?? "",
    since: o.since ?? "",
    until: o.until ?? "",
  });
  // JSON: one record per line (JSON Lines), so `tail -f` can stream; YAML: one document each.
  const print = (ctx: CliContext, recs: AuditRecordInfo[], header: boolean) => {
    if (ctx.format === "json" || ctx.format === "yaml") {
      for (const r of recs) {
        const json = messageJson(AuditRecordInfoSchema, r);
        ctx.out(
          ctx.format === "json" ? `${JSON.stringify(json)}\n` : `---\n${stringifyYaml(json)}`,
        );
      }
      return;
    }
    const rows = recs.map((r) => [
      r.ts,
      String(r.seq),
      r.principal || "-",
      r.method || r.event,
      r.decision || "-",
      r.code || "-",
      r.requestId || "-",
    ]);
    const table = renderTable(
      ["TIME", "SEQ", "PRINCIPAL", "METHOD", "DECISION", "CODE", "REQUEST ID"],
      rows,
    );
    ctx.out(header ? table : table.split("\n").slice(1).join("\n"));
  };
  withExamples(
    filters(
      audit
        .command("search")
        .description("audit records matching filters, oldest first")
        .option("--limit <n>", "at most this many records", "100"),
    ).action(async (opts: FilterOpts & { limit: string }) => {
      const ctx = cli();
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100_000)
        throw new UsageError(`--limit: a whole number from 1 to 100000, got "${opts.limit}"`);
      const client = ctx.client(AuditService);
      const records = await allPages(
        (pageToken) =>
          client
            .listAuditRecords({
              filter: filterOf(opts),
              pageSize: Math.min(1000, limit),
              pageToken,
            })
            .then((r) => ({ items: r.records, next: r.nextPageToken })),
        limit,
      );
      print(ctx, records, true);
    }),
    "hvctl audit search --code PERMISSION_DENIED --since 2026-11-22T00:00:00Z",
    "hvctl audit search --principal ci --method CreateApiKey -o json | jq .requestId",
  );
  withExamples(
    filters(
      audit
        .command("tail")
        .description("the last records; with -f, then every new one until interrupted")
        .option("-n, --lines <n>", "how many past records", "20")
        .option("-f, --follow", "keep printing new records"),
    ).action(async (opts: FilterOpts & { lines: string; follow?: boolean }) => {
      const ctx = cli();
      const n = Number(opts.lines);
      if (!Number.isInteger(n) || n < 0 || n > 1000)
        throw new UsageError(`--lines: a whole number from 0 to 1000, got "${opts.lines}"`);
      const client = ctx.client(AuditService);
      if (!opts.follow) {
        const last: AuditRecordInfo[] = [];
        let pageToken = "";
        let pages = 0;
        do {
          const page = await client.listAuditRecords({
            filter: filterOf(opts),
            pageSize: 1000,
            pageToken,
          });
          last.push(...page.records);
          if (last.length > n) last.splice(0, last.length - n);
          pageToken = page.nextPageToken;
        } while (pageToken !== "" && ++pages < 10_000);
        print(ctx, last, true);
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
          { filter: filterOf(opts), backlog: n },
          { signal: abort.signal },
        )) {
          print(ctx, [r], first);
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
  return audit;
}
