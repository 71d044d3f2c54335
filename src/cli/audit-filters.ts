/*
 * The record filters `hvctl audit search` and `hvctl audit tail` share: the
 * flags and the AuditFilter they make.
 */
import type { Command } from "commander";

/** The filter flags as commander parses them; unset means "any". */
export type AuditFilterOptions = {
  principal?: string;
  event?: string;
  method?: string;
  code?: string;
  since?: string;
  until?: string;
};

/** Adds the filter flags (--principal, --event, --method, --code, --since, --until) to `c`. */
export const auditFilters = (c: Command) =>
  c
    .option("--principal <name>", "only this principal")
    .option("--event <event>", "rpc, rpc.request, audit.start, audit.recovered")
    .option("--method <name>", "only this method, like RegisterNode")
    .option("--code <code>", "only this gRPC code, like PERMISSION_DENIED")
    .option("--since <time>", "ISO 8601, inclusive")
    .option("--until <time>", "ISO 8601, inclusive");

/** The request's filter from the flags; an unset flag is "". */
export const auditFilterOf = (o: AuditFilterOptions) => ({
  principal: o.principal ?? "",
  event: o.event ?? "",
  method: o.method ?? "",
  code: o.code ?? "",
  since: o.since ?? "",
  until: o.until ?? "",
});
