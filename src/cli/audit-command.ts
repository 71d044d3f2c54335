import { readFileSync } from "node:fs";
import { toJson } from "@bufbuild/protobuf";
import { Command } from "commander";
import { verifyAuditFiles } from "../audit/index.js";
import {
  type AuditRecordInfo,
  AuditRecordInfoSchema,
  AuditService,
} from "../gen/debvisor/v1/audit_pb.js";
import type { CliContext } from "./cli-context.js";
import { renderTable } from "./output.js";

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
  const print = (ctx: CliContext, recs: AuditRecordInfo[], header: boolean) => {
    if (ctx.format === "json") {
      for (const r of recs) ctx.out(`${JSON.stringify(toJson(AuditRecordInfoSchema, r))}\n`);
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
  filters(
    audit
      .command("search")
      .description("audit records matching filters, oldest first")
      .option("--limit <n>", "at most this many records", "100"),
  ).action(async (opts: FilterOpts & { limit: string }) => {
    const ctx = cli();
    const limit = Math.max(1, Math.min(100_000, Number(opts.limit) || 100));
    const client = ctx.client(AuditService);
    const out: AuditRecordInfo[] = [];
    let pageToken = "";
    do {
      const page = await client.listAuditRecords(
        { filter: filterOf(opts), pageSize: Math.min(1000, limit - out.length), pageToken },
        { timeoutMs: ctx.timeoutMs },
      );
      out.push(...page.records);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && out.length < limit);
    print(ctx, out, true);
  });
  filters(
    audit
      .command("tail")
      .description("the last records; with -f, then every new one until interrupted")
      .option("-n, --lines <n>", "how many past records", "20")
      .option("-f, --follow", "keep printing new records"),
  ).action(async (opts: FilterOpts & { lines: string; follow?: boolean }) => {
    const ctx = cli();
    const n = Math.max(0, Math.min(1000, Number(opts.lines) || 0));
    const client = ctx.client(AuditService);
    if (!opts.follow) {
      const last: AuditRecordInfo[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await client.listAuditRecords(
          { filter: filterOf(opts), pageSize: 1000, pageToken },
          { timeoutMs: ctx.timeoutMs },
        );
        last.push(...page.records);
        if (last.length > n) last.splice(0, last.length - n);
        pageToken = page.nextPageToken;
      } while (pageToken !== "" && ++pages < 10_000);
      print(ctx, last, true);
      return;
    }
    const abort = new AbortController();
    process.once("SIGINT", () => abort.abort());
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
    }
  });
  return audit;
}
