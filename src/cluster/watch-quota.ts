import { type CallContext, RpcError } from "../core/index.js";

/** Open watches a caller may hold at once, per principal and per tenant. */
export interface WatchQuota {
  /**
   * Counts a watch opened by `ctx`'s caller until the returned release is
   * called; throws RESOURCE_EXHAUSTED (`TOO_MANY_WATCHES`) past a limit.
   */
  open(ctx: CallContext): () => void;
}

/** Limits of {@link createWatchQuota}. */
export interface WatchQuotaLimits {
  /** Watches one principal holds at once. */
  readonly perPrincipal: number;
  /** Watches all principals confined to one tenant hold at once (their keys are theirs to mint). */
  readonly perTenant: number;
}

/** Default limits: generous for a panel and a few terminals, far below memory trouble. */
export const DEFAULT_WATCH_LIMITS: WatchQuotaLimits = { perPrincipal: 64, perTenant: 256 };

/**
 * One quota shared by every watching method of this process (lists and
 * events), so a caller cannot hold an unbounded number of server streams
 * that each keep a view in memory.
 */
export function createWatchQuota(limits: WatchQuotaLimits = DEFAULT_WATCH_LIMITS): WatchQuota {
  const counts = new Map<string, number>();
  const take = (key: string, max: number): boolean => {
    const n = counts.get(key) ?? 0;
    if (n >= max) return false;
    counts.set(key, n + 1);
    return true;
  };
  const give = (key: string) => {
    const n = (counts.get(key) ?? 1) - 1;
    if (n <= 0) counts.delete(key);
    else counts.set(key, n);
  };
  return {
    open(ctx) {
      // Per tenant the caller is confined to: a name keyed in two tenants (a tenant admin's
      // key for a name another tenant later uses) holds two quotas, never the other's.
      const who = `p:${JSON.stringify([ctx.tenant ?? "", ctx.principal?.id ?? ctx.peer.address])}`;
      const tenant = ctx.tenant === undefined ? undefined : `t:${ctx.tenant}`;
      if (!take(who, limits.perPrincipal))
        throw new RpcError("TOO_MANY_WATCHES", {
          message: `at most ${limits.perPrincipal} open watches per caller`,
        });
      if (tenant !== undefined && !take(tenant, limits.perTenant)) {
        give(who);
        throw new RpcError("TOO_MANY_WATCHES", {
          message: `at most ${limits.perTenant} open watches per tenant`,
        });
      }
      let released = false;
      return () => {
        if (released) return;
        released = true;
        give(who);
        if (tenant !== undefined) give(tenant);
      };
    },
  };
}
