import {
  type Clock,
  type Principal,
  principalOf,
  RpcError,
  type Stage,
  sourceOf,
} from "../core/index.js";
import { type AccessPolicy, rolesIn } from "./access-evaluator.js";
import { type BucketLimit, createRateLimiter, type Take } from "./rate-limiter.js";
import { sourceGroupOf } from "./source-group.js";

/** Rate limit settings. */
export interface RateLimitOptions {
  readonly clock: Clock;
  /** Per source address, before authentication: floods never reach the credential checks. */
  readonly perSource: BucketLimit;
  /** Per authenticated principal, unless one of its roles has its own limit (the most generous applies). */
  readonly perPrincipal: BucketLimit;
  /**
   * Limits of roles held cluster-wide (a cluster-wide binding, an unconfined
   * credential's own roles): what a cluster admin gave. A role held only in a
   * tenant is a tenant admin's to give, so it never raises a limit.
   */
  readonly perRole: Readonly<Record<string, BucketLimit>>;
  /**
   * One budget for every credential confined to a tenant, on top of each
   * one's own: a tenant admin can mint principals (API keys), and each had a
   * full per-principal budget. Undefined: none.
   */
  readonly perTenant?: BucketLimit;
  /** Tokens a call of a method costs, by gRPC path (default 1). */
  readonly methodCost: Readonly<Record<string, number>>;
  readonly policy: () => AccessPolicy;
  /** Buckets kept per limiter (default 100,000). */
  readonly maxKeys?: number;
}

/**
 * The two rate-limit stages: one to run before authentication, one after
 * authorization; and the per-principal budget itself, for requests that do
 * not go through the pipeline (the panel's /auth/ endpoints), so a principal
 * has one budget whichever way it comes in.
 */
export function createRateLimitStages(options: RateLimitOptions): {
  perSource: Stage;
  perPrincipal: Stage;
  takePrincipal(principal: Principal, cost?: number): Take;
  takeSource(source: string): Take;
} {
  const sources = createRateLimiter(options.clock, options.maxKeys);
  const principals = createRateLimiter(options.clock, options.maxKeys);
  const tenants = createRateLimiter(options.clock, options.maxKeys);
  const refuse = (retryAfterMs: number, who: string): never => {
    throw new RpcError("RATE_LIMITED", {
      message: `rate limit exceeded; retry after ${retryAfterMs} ms`,
      retryAfterMs,
      cause: new Error(`rate limit exceeded for ${who}`),
    });
  };
  const takePrincipal = (principal: Principal, cost = 1): Take => {
    let limit = options.perPrincipal;
    for (const role of rolesIn(options.policy(), principal, undefined)) {
      const l = options.perRole[role];
      if (l !== undefined && l.ratePerSecond > limit.ratePerSecond) limit = l;
    }
    // Per tenant the credential is confined to: one name keyed in two tenants (a tenant
    // admin's key for a name another tenant later uses) is two callers, not one budget.
    const who = JSON.stringify([principal.method, principal.tenant ?? "", principal.id]);
    const own = principals.take(who, cost, limit);
    if (!own.allowed || principal.tenant === undefined || options.perTenant === undefined)
      return own;
    const tenant = tenants.take(principal.tenant, cost, options.perTenant);
    // Refused by its tenant's budget, the call spends none of the caller's own.
    if (!tenant.allowed) principals.giveBack(who, cost, limit);
    return tenant;
  };
  /** One request from `source` (an address without port), counted with its source group. */
  const takeSource = (source: string): Take =>
    sources.take(sourceGroupOf(source), 1, options.perSource);
  return {
    takePrincipal,
    takeSource,
    perSource: async (invocation, next) => {
      if (invocation.ctx.method.access !== "public") {
        const source = sourceOf(invocation.ctx.peer.address);
        const t = takeSource(source);
        if (!t.allowed) refuse(t.retryAfterMs, `source ${sourceGroupOf(source)}`);
      }
      return next(invocation);
    },
    perPrincipal: async (invocation, next) => {
      const { ctx } = invocation;
      if (ctx.method.access !== "public") {
        const principal = principalOf(ctx);
        const t = takePrincipal(principal, options.methodCost[ctx.method.path] ?? 1);
        if (!t.allowed)
          refuse(
            t.retryAfterMs,
            `principal ${principal.id}${principal.tenant === undefined ? "" : ` or tenant ${principal.tenant}`}`,
          );
      }
      return next(invocation);
    },
  };
}
