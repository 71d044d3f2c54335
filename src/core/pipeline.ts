import type { CallContext, CallScope } from "./call-context.js";
import type { MethodKind } from "./method-spec.js";
import { type FieldViolation, validateMessage } from "./request-validator.js";
import { RpcError } from "./rpc-error.js";

/**
 * One call on its way through the pipeline. `request` is the decoded message
 * for unary and server-streaming calls, and an AsyncIterable of messages for
 * client- and bidi-streaming calls.
 */
export interface Invocation {
  readonly ctx: CallContext;
  readonly request: unknown;
}

/**
 * What the rest of the pipeline produced. A unary (or client-streaming)
 * call has finished when its result exists; a streaming call has only
 * started: its outcome is known when `responses` ends or throws. Stages
 * that care about outcomes (audit, metrics) must narrow on `kind`, so a
 * stream can never be taken for a finished call.
 */
export type CallResult =
  | { readonly kind: "unary"; readonly response: unknown }
  | { readonly kind: "stream"; readonly responses: AsyncIterable<unknown> };

/** Runs the rest of the pipeline and the handler. */
export type Next = (invocation: Invocation) => Promise<CallResult>;

/**
 * A pipeline stage: authentication, authorization, rate limit, validation,
 * audit, metrics. A stage may pass a derived context on, refuse by throwing an
 * RpcError, or observe the outcome of `next` (for a stream: by wrapping
 * `responses`, see {@link mapStream}).
 */
export type Stage = (invocation: Invocation, next: Next) => Promise<CallResult>;

/** True for methods whose handler answers with a stream of responses. */
export function streamsResponses(kind: MethodKind): boolean {
  return kind === "server_streaming" || kind === "bidi_streaming";
}

/**
 * The result of calling a handler, tagged by the method's kind: a handler of
 * a response-streaming method returns an AsyncIterable, any other the response.
 */
export function handlerResult(kind: MethodKind, value: unknown): CallResult {
  return streamsResponses(kind)
    ? { kind: "stream", responses: value as AsyncIterable<unknown> }
    : { kind: "unary", response: value };
}

/** Replaces a stream result's responses with `wrap(responses)`; a unary result passes unchanged. */
export function mapStream(
  result: CallResult,
  wrap: (responses: AsyncIterable<unknown>) => AsyncIterable<unknown>,
): CallResult {
  return result.kind === "stream" ? { kind: "stream", responses: wrap(result.responses) } : result;
}

/** Composes stages, outermost first, around a terminal step that calls the handler. */
export function composeStages(stages: readonly Stage[], terminal: Next): Next {
  let next = terminal;
  for (let i = stages.length - 1; i >= 0; i--) {
    const stage = stages[i] as Stage;
    const inner = next;
    next = (invocation) => stage(invocation, inner);
  }
  return next;
}

/**
 * Validates unary and server-streaming requests against the rules declared
 * on their fields in the protos, then runs the method's own cross-field check
 * if it has one. Violations are INVALID_ARGUMENT naming each field and rule,
 * with google.rpc.BadRequest details.
 */
export const validationStage: Stage = async (invocation, next) => {
  const { method } = invocation.ctx;
  if (method.kind === "unary" || method.kind === "server_streaming") {
    const violations = validateMessage(method.desc.input, invocation.request);
    if (violations.length > 0) {
      const first = violations[0] as FieldViolation;
      throw new RpcError("INVALID_ARGUMENT", {
        message: `${first.field}: ${first.description}${violations.length > 1 ? ` (and ${violations.length - 1} more)` : ""}`,
        fieldViolations: violations,
      });
    }
  }
  method.validate?.(invocation.request);
  return next(invocation);
};

/** Derives a context carrying a principal; stages use it instead of mutating. */
export function withPrincipal(
  ctx: CallContext,
  principal: NonNullable<CallContext["principal"]>,
): CallContext {
  return { ...ctx, principal, log: ctx.log.child({ principal: principal.id }) };
}

/** The whole cluster: what a call sees when authorization is left out (benchmark settings). */
const CLUSTER_SCOPE: CallScope = Object.freeze({
  tenant: undefined,
  clusterWide: true,
  canSee: () => true,
});

/** The call's scope as authorization set it; cluster-wide only when no authorization stage ran. */
export function scopeOf(ctx: CallContext): CallScope {
  return ctx.scope ?? CLUSTER_SCOPE;
}

/**
 * The authenticated principal of a call. Handlers of authenticated methods
 * use it; calling it where authentication did not run is a programming error.
 */
export function principalOf(ctx: CallContext): NonNullable<CallContext["principal"]> {
  if (ctx.principal === undefined)
    throw new TypeError(`${ctx.method.path}: no principal in context`);
  return ctx.principal;
}
