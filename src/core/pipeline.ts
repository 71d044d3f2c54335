import type { CallContext } from "./call-context.js";

/**
 * One call on its way through the pipeline. `request` is the decoded message
 * for unary and server-streaming calls, and an AsyncIterable of messages for
 * client- and bidi-streaming calls.
 */
export interface Invocation {
  readonly ctx: CallContext;
  readonly request: unknown;
}

/** Runs the rest of the pipeline and the handler; resolves to the response (or response stream). */
export type Next = (invocation: Invocation) => Promise<unknown>;

/**
 * A pipeline stage: authentication, authorization, rate limit, validation,
 * audit, metrics. A stage may pass a derived context on, refuse by throwing an
 * RpcError, or observe the outcome of `next`.
 */
export type Stage = (invocation: Invocation, next: Next) => Promise<unknown>;

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

/** A stage that runs the method's own request validator, if it has one. */
export const validationStage: Stage = async (invocation, next) => {
  const validate = invocation.ctx.method.validate;
  if (validate !== undefined) validate(invocation.request);
  return next(invocation);
};

/** Derives a context carrying a principal; stages use it instead of mutating. */
export function withPrincipal(
  ctx: CallContext,
  principal: NonNullable<CallContext["principal"]>,
): CallContext {
  return { ...ctx, principal, log: ctx.log.child({ principal: principal.id }) };
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
