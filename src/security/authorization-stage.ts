import { principalOf, RpcError, type Stage } from "../core/index.js";
import { type AccessPolicy, decide } from "./access-evaluator.js";

/**
 * Default-deny authorization: the method's permission must be granted by one
 * of the principal's roles (its credential's and its bindings'). The deciding
 * rule, or the closest miss, goes to the log; the client sees only
 * PERMISSION_DENIED. Passes the principal's tenant on in the context.
 */
export function createAuthorizationStage(policy: () => AccessPolicy): Stage {
  return async (invocation, next) => {
    const { ctx } = invocation;
    if (ctx.method.access === "public") return next(invocation);
    const principal = principalOf(ctx);
    const resource = ctx.method.resource?.(invocation.request) ?? {};
    const decision = decide(policy(), principal, ctx.method.permission, resource);
    ctx.notes.decision = decision.allowed ? "allow" : "deny";
    ctx.notes.reason = decision.reason;
    ctx.notes.tenant = decision.tenant;
    if (!decision.allowed) {
      ctx.log.warn(
        { permission: ctx.method.permission, rule: decision.reason },
        "permission denied",
      );
      throw new RpcError("PERMISSION_DENIED", { cause: new Error(decision.reason) });
    }
    return next({ ...invocation, ctx: { ...ctx, tenant: decision.tenant } });
  };
}
