/*
 * How `hvctl audit search|tail` print audit records: a table, or one
 * JSON/YAML document per record so a followed trail streams.
 */
import { stringify as stringifyYaml } from "yaml";
import { type AuditRecordInfo, AuditRecordInfoSchema } from "../gen/debvisor/v1/audit_pb.js";
import type { CliContext } from "./cli-context.js";
import { messageJson, renderTable } from "./output.js";

/** Prints records in the context's format; `header` false leaves the table's header line out. */
export const printAuditRecords = (ctx: CliContext, recs: AuditRecordInfo[], header: boolean) => {
  // JSON: one record per line (JSON Lines), so `tail -f` can stream; YAML: one document each.
  if (ctx.format === "json" || ctx.format === "yaml") {
    for (const r of recs) {
      const json = messageJson(AuditRecordInfoSchema, r);
      ctx.out(ctx.format === "json" ? `${JSON.stringify(json)}\n` : `---\n${stringifyYaml(json)}`);
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
