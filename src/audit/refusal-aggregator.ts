import { type CallContext, codeName, type Logger, type RpcError, sourceOf } from "../core/index.js";
import type { AuditLog } from "./audit-log.js";
import type { AuditFields } from "./audit-record.js";

/** Reasons refused before anyone is known (or for volume): counted, not recorded one by one. */
const AGGREGATED = new Set(["UNAUTHENTICATED", "AUTH_LOCKED_OUT", "RATE_LIMITED"]);

/** Options of {@link createRefusalAggregator}. */
export interface RefusalAggregatorOptions {
  readonly log: AuditLog;
  /** One record per source and reason per interval (default 60 s). */
  readonly intervalMs?: number;
  /** Distinct sources, reasons and methods kept per interval; more are counted together under peer `*` (default 1,000). */
  readonly maxSources?: number;
  readonly now?: () => number;
  readonly logger?: Logger;
}

/**
 * Turns floods of unauthenticated, anonymous and rate-limited calls into a handful of
 * audit records: per interval, one record per source address, reason and
 * method (and principal, for a principal over its rate limit), with the
 * count in `args`. A flood can neither fill the disk nor cost an fsync per call.
 */
export interface RefusalAggregator {
  /** True (and counted) when this refusal is aggregated rather than recorded on its own. */
  note(ctx: CallContext, error: RpcError): boolean;
  /**
   * Counts a refusal that is not a call through the pipeline (the panel's
   * sign-in endpoints), keyed like a call's by its peer (a source address),
   * reason, principal, service and method; `reason` must be a catalogue
   * reason (few distinct values), never free text.
   */
  count(fields: AuditFields): void;
  /** Writes the counts gathered so far, durably. */
  flush(): Promise<void>;
  /** Stops the timer and flushes. */
  close(): Promise<void>;
}

interface Bucket {
  readonly fields: AuditFields;
  count: number;
  readonly firstAt: number;
  lastAt: number;
}

/** Creates an aggregator that flushes every interval (the timer does not hold the process open). */
export function createRefusalAggregator(options: RefusalAggregatorOptions): RefusalAggregator {
  const now = options.now ?? Date.now;
  const maxSources = options.maxSources ?? 1000;
  let buckets = new Map<string, Bucket>();
  const flush = async () => {
    if (buckets.size === 0) return;
    const done = buckets;
    buckets = new Map();
    const results = await Promise.allSettled(
      [...done.values()].map((b) =>
        options.log.append({
          ...b.fields,
          args: JSON.stringify({
            count: b.count,
            from: new Date(b.firstAt).toISOString(),
            to: new Date(b.lastAt).toISOString(),
          }),
          durationMs: b.lastAt - b.firstAt,
        }),
      ),
    );
    const lost = results.filter((r) => r.status === "rejected");
    if (lost.length > 0)
      options.logger?.error(
        { err: (lost[0] as PromiseRejectedResult).reason, records: lost.length },
        "aggregated refusals could not be audited",
      );
  };
  const timer = setInterval(() => void flush(), options.intervalMs ?? 60_000);
  timer.unref();
  /** Counts one refusal in the bucket `key`; past maxSources a new key joins the overflow bucket. */
  const bump = (key: string, reason: string, fieldsOf: (overflow: boolean) => AuditFields) => {
    const overflow = !buckets.has(key) && buckets.size >= maxSources;
    const k = overflow ? `*\n${reason}` : key;
    const t = now();
    const b = buckets.get(k);
    if (b !== undefined) {
      b.count++;
      b.lastAt = t;
      return;
    }
    buckets.set(k, { count: 1, firstAt: t, lastAt: t, fields: fieldsOf(overflow) });
  };
  return {
    note(ctx, error) {
      // Every refusal of an anonymous call (a bad enrollment request too) is counted, not recorded.
      if (!AGGREGATED.has(error.reason) && ctx.notes.principal !== undefined) return false;
      const p = ctx.notes.principal;
      const source = sourceOf(ctx.peer.address);
      // Per method too: a record names the method its count is of.
      const key = `${source}\n${error.reason}\n${p?.method ?? ""}:${p?.id ?? ""}\n${ctx.method.path}`;
      bump(key, error.reason, (overflow) => ({
        event: "rpc.aggregate",
        requestId: ctx.requestId,
        principal: overflow ? "" : (p?.id ?? ""),
        authMethod: overflow ? "" : (p?.method ?? ""),
        keyId: "",
        tenant: "",
        peer: overflow ? "*" : source,
        // The overflow bucket counts every method together: it names none.
        service: overflow ? "" : ctx.method.service,
        method: overflow ? "" : ctx.method.name,
        permission: "",
        decision: ctx.notes.decision ?? "",
        reason: error.reason,
        args: "",
        code: codeName(error.code),
        error: error.clientMessage,
        durationMs: 0,
      }));
      return true;
    },
    count(fields) {
      const key = `${fields.peer}\n${fields.reason}\n${fields.authMethod}:${fields.principal}\n/${fields.service}/${fields.method}`;
      bump(key, fields.reason, (overflow) =>
        overflow
          ? {
              ...fields,
              event: "rpc.aggregate",
              principal: "",
              authMethod: "",
              peer: "*",
              service: "",
              method: "",
            }
          : { ...fields, event: "rpc.aggregate" },
      );
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
