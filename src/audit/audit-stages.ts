import { type DescMessage, getOption, hasOption, toJson } from "@bufbuild/protobuf";
import {
  type CallContext,
  type CallResult,
  Code,
  codeName,
  type Logger,
  RpcError,
  type Stage,
  toRpcError,
} from "../core/index.js";
import { sensitive } from "../gen/debvisor/v1/validate_pb.js";
import type { AuditLog } from "./audit-log.js";
import type { AuditFields } from "./audit-record.js";
import { createRefusalAggregator } from "./refusal-aggregator.js";

/** Longest argument summary written. */
const MAX_ARGS = 200;

/** Options of {@link createAuditStages}. */
export interface AuditStageOptions {
  readonly log: AuditLog;
  /** Let read-only calls through while the trail cannot be written (default false: refuse everything). */
  readonly allowReadsWhenFailing?: boolean;
  readonly now?: () => number;
  /** Unauthenticated and rate-limited refusals: one record per source and reason per interval (default 60 s)... */
  readonly refusalIntervalMs?: number;
  /** ...for at most this many sources per interval, the rest counted together (default 1,000). */
  readonly refusalMaxSources?: number;
  /** Where a failed flush of aggregated refusals is reported. */
  readonly logger?: Logger;
}

/** The audit stages, and the lifecycle of the aggregated refusals they hold. */
export interface AuditStages {
  readonly outer: Stage;
  readonly beforeAct: Stage;
  /** Counts a refusal made outside the pipeline (the panel's sign-in endpoints); see RefusalAggregator.count. */
  count(fields: AuditFields): void;
  /** Writes the refusals counted so far. */
  flush(): Promise<void>;
  /** Flushes and stops the interval timer; call before closing the log. */
  close(): Promise<void>;
}

/**
 * The audit trail's two pipeline stages. `outer` runs first: it refuses
 * calls while the trail cannot be written, and after the call it writes the
 * outcome (who, what, decision and rule, code, duration), durably, before the
 * response goes out; denied calls are recorded too. A streaming call is
 * recorded when its stream ends, with its real outcome (an error midway, a
 * cancel), before the client sees the status. Unauthenticated and
 * rate-limited refusals are counted instead, one record per source and
 * reason per interval. `beforeAct` runs last, right before the handler: for
 * a mutating call (a stream too) it writes the request durably before
 * anything can change.
 */
export function createAuditStages(options: AuditStageOptions): AuditStages {
  const { log } = options;
  const now = options.now ?? Date.now;
  const refusals = createRefusalAggregator({
    log,
    intervalMs: options.refusalIntervalMs,
    maxSources: options.refusalMaxSources,
    now,
    logger: options.logger,
  });
  /** Writes a call's outcome; a failure to write becomes AUDIT_UNAVAILABLE for the client. */
  const outcome = async (ctx: CallContext, request: unknown, error: RpcError | undefined) => {
    try {
      await log.append(fields(ctx, request, "rpc", error, now() - ctx.startedAt));
    } catch (auditErr) {
      if (!ctx.method.mutating && options.allowReadsWhenFailing) {
        // Configured trade-off: a read is answered though its record is lost (said in the log).
        ctx.log.warn({ err: auditErr }, "read answered without an audit record");
        return;
      }
      // Not acknowledged: the client must not believe an unrecorded call succeeded.
      ctx.log.error(
        { err: auditErr, outcome: error?.reason ?? "OK" },
        "audit record of the outcome could not be written",
      );
      throw new RpcError("AUDIT_UNAVAILABLE", { cause: auditErr });
    }
  };
  return {
    outer: async (invocation, next) => {
      const { ctx, request } = invocation;
      // Health probes are not security events; recording them would drown the trail.
      // Public calls that change something (enrollment) are recorded.
      if (ctx.method.access === "public" && !ctx.method.mutating) return next(invocation);
      if (log.failing() && (ctx.method.mutating || !options.allowReadsWhenFailing)) {
        throw new RpcError("AUDIT_UNAVAILABLE");
      }
      let result: CallResult;
      try {
        result = await next(invocation);
      } catch (err) {
        const error = toRpcError(err);
        if (!refusals.note(ctx, error)) await outcome(ctx, request, error);
        throw error;
      }
      if (result.kind === "unary") {
        await outcome(ctx, request, undefined);
        return result;
      }
      return { kind: "stream", responses: recordedAtEnd(result.responses, ctx, request, outcome) };
    },
    beforeAct: async (invocation, next) => {
      const { ctx } = invocation;
      // An anonymous call (enrollment) is recorded by its outcome only: a request record
      // per call would let anyone fill the disk; what it changes, the store records too.
      if (ctx.method.mutating && ctx.notes.principal !== undefined)
        await log.append(fields(ctx, invocation.request, "rpc.request", undefined, 0));
      return next(invocation);
    },
    count: (fields) => refusals.count(fields),
    flush: () => refusals.flush(),
    close: () => refusals.close(),
  };
}

/**
 * Passes a call's responses through and records the call when they end: OK
 * when the stream completed, the error it ended with, or why it was stopped
 * early (the client cancelled, the deadline passed, the server shut down).
 */
async function* recordedAtEnd(
  responses: AsyncIterable<unknown>,
  ctx: CallContext,
  request: unknown,
  outcome: (ctx: CallContext, request: unknown, error: RpcError | undefined) => Promise<void>,
): AsyncIterable<unknown> {
  let error: RpcError | undefined;
  let ended = false;
  try {
    for await (const response of responses) yield response;
    ended = true;
  } catch (err) {
    error = toRpcError(err);
  } finally {
    if (!ended && error === undefined)
      error = toRpcError(ctx.signal.reason ?? new RpcError("CANCELLED"));
    await outcome(ctx, request, error);
  }
  if (error !== undefined) throw error;
}

function fields(
  ctx: CallContext,
  request: unknown,
  event: string,
  error: RpcError | undefined,
  durationMs: number,
): AuditFields {
  const p = ctx.notes.principal;
  return {
    event,
    requestId: ctx.requestId,
    principal: p?.id ?? "",
    authMethod: p?.method ?? "",
    keyId: p?.keyId ?? "",
    // The tenant authorization decided (a binding may confine a principal its credential does not).
    tenant: ctx.notes.tenant ?? p?.tenant ?? "",
    peer: ctx.peer.address,
    service: ctx.method.service,
    method: ctx.method.name,
    permission: ctx.method.permission ?? "",
    // Authorization let it through but the handler refused it (another tenant's filter, say):
    // denied all the same, and why.
    decision: refusedPast(ctx, error) ? "deny" : (ctx.notes.decision ?? ""),
    reason: refusedPast(ctx, error) ? (error?.reason ?? "") : (ctx.notes.reason ?? ""),
    args: summarize(ctx.method.desc.input, request),
    code: event === "rpc.request" ? "" : codeName(error?.code ?? 0),
    error: error?.clientMessage ?? "",
    durationMs,
  };
}

/** Whether a call authorization allowed ended PERMISSION_DENIED all the same. */
function refusedPast(ctx: CallContext, error: RpcError | undefined): boolean {
  return ctx.notes.decision === "allow" && error?.code === Code.PermissionDenied;
}

/**
 * A short JSON summary of the request with every field marked
 * `(debvisor.v1.sensitive)` replaced, at any depth, cut to 200 characters.
 * Streams and undecodable requests summarize as empty.
 */
export function summarize(desc: DescMessage, request: unknown): string {
  if (
    request === undefined ||
    request === null ||
    typeof request !== "object" ||
    !("$typeName" in request)
  )
    return "";
  let json: unknown;
  try {
    json = toJson(desc, request as never, { enumAsInteger: true });
  } catch {
    return "";
  }
  const text = JSON.stringify(redact(desc, json));
  return text.length <= MAX_ARGS ? text : `${text.slice(0, MAX_ARGS - 1)}…`;
}

function redact(desc: DescMessage, json: unknown): unknown {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return json;
  const out: Record<string, unknown> = { ...(json as Record<string, unknown>) };
  for (const f of desc.fields) {
    if (!(f.jsonName in out)) continue;
    if (hasOption(f, sensitive) && getOption(f, sensitive)) out[f.jsonName] = "[redacted]";
    else if (f.message !== undefined) {
      const v = out[f.jsonName];
      const m = f.message;
      out[f.jsonName] = Array.isArray(v) ? v.map((x) => redact(m, x)) : redact(m, v);
    }
  }
  return out;
}
