import {
  type CallContext,
  type CallResult,
  mapStream,
  principalOf,
  type ResourceRef,
  RpcError,
} from "../core/index.js";
import {
  type AccessPolicy,
  accessOf,
  type Decision,
  decide,
  decideIn,
} from "./access-evaluator.js";
import { endWhen, type Subscribe } from "./stream-end.js";

/**
 * Whether a stream method shows what the caller may see (`Watch*`,
 * `FollowAuditRecords`), as against one doing work (a drain, an agent's
 * stream, a transfer). Every server stream of debvisor.v1 is one or the other.
 */
export function showsView(method: string): boolean {
  return /^(Watch|Follow)/.test(method);
}

/**
 * A stream decided once, with the caller's slice of the policy at its start (`atStart`), kept so
 * while it runs. On each policy change, nothing happens unless the caller's
 * own access changed (accessOf). Then a stream that shows what the caller
 * may see (a watch, a follow) ends: ACCESS_CHANGED (to be opened again and
 * decided anew) while it still holds the permission somewhere, else
 * PERMISSION_DENIED. One that does work (a drain, an agent's stream, a
 * transfer) goes on while the caller holds the permission in `scope` (where
 * it was granted: undefined, cluster-wide), and ends PERMISSION_DENIED once
 * it does not.
 */
export function keepAuthorized(
  result: CallResult,
  o: {
    ctx: CallContext;
    policy: () => AccessPolicy;
    onPolicyChange: Subscribe | undefined;
    /** The caller's policySlice at the start: only the access it gives is kept, as a string. */
    atStart: AccessPolicy;
    resource: ResourceRef;
    scope: string | undefined;
  },
): CallResult {
  const { ctx, policy, onPolicyChange, atStart, resource, scope } = o;
  // A unary call has nothing to keep: accessOf only for streams.
  if (onPolicyChange === undefined || result.kind !== "stream") return result;
  const principal = principalOf(ctx);
  const had = accessOf(atStart, principal);
  const { permission } = ctx.method;
  const shows = showsView(ctx.method.name);
  const denied = (d: Decision) => new RpcError("PERMISSION_DENIED", { cause: new Error(d.reason) });
  const check = (): RpcError | undefined => {
    const now = policy();
    if (accessOf(now, principal) === had) return undefined;
    if (shows) {
      const still = decide(now, principal, permission, resource);
      ctx.log.info(
        { permission, allowed: still.allowed },
        "stream ended: the caller's access changed",
      );
      return still.allowed ? new RpcError("ACCESS_CHANGED") : denied(still);
    }
    const held = decideIn(now, principal, permission, resource, scope);
    if (held.allowed) return undefined;
    ctx.log.info({ permission }, "stream ended: the caller no longer holds its permission");
    return denied(held);
  };
  return mapStream(result, (responses) => endWhen(responses, check, onPolicyChange));
}
