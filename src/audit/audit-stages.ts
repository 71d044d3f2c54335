import { type DescMessage, getOption, hasOption, toJson } from "@bufbuild/protobuf";
import { type CallContext, codeName, RpcError, type Stage, toRpcError } from "../core/index.js";
import { sensitive } from "../gen/debvisor/v1/validate_pb.js";
import type { AuditLog } from "./audit-log.js";
import type { AuditFields } from "./audit-record.js";

/** Longest argument summary written. */
const MAX_ARGS = 200;

/** Options of {@link createAuditStages}. */
export interface AuditStageOptions {
  readonly log: AuditLog;
  /** Let read-only calls through while the trail cannot be written (default false: refuse everything). */
  readonly allowReadsWhenFailing?: boolean;
  readonly now?: () => number;
}

/**
 * The audit trail's two pipeline stages. `outer` runs first: it refuses
 * calls while the trail cannot be written, and after the call it writes the
 * outcome (who, what, decision and rule, code, duration), durably, before the
 * response goes out; denied and unauthenticated calls are recorded too.
 * `beforeAct` runs last, right before the handler: for a mutating call it
 * writes the request durably before anything can change.
 */
export function createAuditStages(options: AuditStageOptions): { outer: Stage; beforeAct: Stage } {
  const { log } = options;
  const now = options.now ?? Date.now;
  return {
    outer: async (invocation, next) => {
      const { ctx } = invocation;
      // Health probes are not security events; recording them would drown the trail.
      // Public calls that change something (enrollment) are recorded.
      if (ctx.method.access === "public" && !ctx.method.mutating) return next(invocation);
      if (log.failing() && (ctx.method.mutating || !options.allowReadsWhenFailing)) {
        throw new RpcError("AUDIT_UNAVAILABLE");
      }
      let error: RpcError | undefined;
      let result: unknown;
      try {
        result = await next(invocation);
      } catch (err) {
        error = toRpcError(err);
      }
      try {
        await log.append(fields(ctx, invocation.request, "rpc", error, now() - ctx.startedAt));
      } catch (auditErr) {
        if (!ctx.method.mutating && options.allowReadsWhenFailing) {
          // Configured trade-off: a read is answered though its record is lost (said in the log).
          ctx.log.warn({ err: auditErr }, "read answered without an audit record");
          if (error !== undefined) throw error;
          return result;
        }
        // Not acknowledged: the client must not believe an unrecorded call succeeded.
        ctx.log.error(
          { err: auditErr, outcome: error?.reason ?? "OK" },
          "audit record of the outcome could not be written",
        );
        throw new RpcError("AUDIT_UNAVAILABLE", { cause: auditErr });
      }
      if (error !== undefined) throw error;
      return result;
    },
    beforeAct: async (invocation, next) => {
      const { ctx } = invocation;
      if (ctx.method.mutating)
        await log.append(fields(ctx, invocation.request, "rpc.request", undefined, 0));
      return next(invocation);
    },
  };
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
    decision: ctx.notes.decision ?? "",
    reason: ctx.notes.reason ?? "",
    args: summarize(ctx.method.desc.input, request),
    code: event === "rpc.request" ? "" : codeName(error?.code ?? 0),
    error: error?.clientMessage ?? "",
    durationMs,
  };
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
