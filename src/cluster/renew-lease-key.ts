/**
 * One node's liveness key kept alive: a keepalive of the lease behind it,
 * or, when it has none alive, a grant and a txn attaching it to a new one.
 * Runs on the heartbeat path.
 */
import { RpcError } from "../core/index.js";
import type { KeyValue, KvStore, PrefixMirror } from "../store/index.js";

const RENEW_ATTEMPTS = 4;

/** A liveness key as this process's copy holds it: its lease and revision. */
export interface HeldKey {
  readonly lease: string | undefined;
  readonly rev: number;
}

/** The {@link HeldKey} of a stored liveness key. */
export const decodeHeldKey = (kv: KeyValue): HeldKey => ({ lease: kv.lease, rev: kv.modRevision });

/**
 * Renews the lease behind node `id`'s key in `keys` with one keepalive, or
 * attaches the key to a new lease when it has none alive (a grant and a
 * txn: raft proposals, which a keepalive is not). True when it was
 * attached anew. An attachment shows in `keys` at once (`wrote`): a
 * renewal right after it, before its watch event is in, keeps that lease
 * alive instead of granting another.
 */
export async function renewLeaseKey(
  store: KvStore,
  keys: PrefixMirror<HeldKey>,
  prefix: string,
  id: string,
  ttl: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const key = prefix + id;
  let known = keys.values().get(id);
  for (let attempt = 0; attempt < RENEW_ATTEMPTS; attempt++) {
    if (known?.lease !== undefined) {
      try {
        await store.lease(known.lease, ttl).keepAlive({ signal });
        return false;
      } catch (err) {
        if (!(err instanceof RpcError) || err.reason !== "LEASE_NOT_FOUND") throw err;
      }
    }
    const lease = await store.grantLease(ttl, { signal });
    const txn = await store.txn(
      {
        compares: [{ key, modRevision: known?.rev ?? 0 }],
        success: [{ type: "put", key, value: new Uint8Array(0), lease: lease.id }],
      },
      { signal },
    );
    if (txn.succeeded) {
      keys.wrote(id, txn.revision, { lease: lease.id, rev: txn.revision });
      return true;
    }
    // Someone else attached it meanwhile (or the copy was behind): renew theirs.
    await lease.revoke({ signal }).catch(() => undefined);
    const got = await store.get(key, { signal });
    known = got === undefined ? undefined : decodeHeldKey(got);
  }
  throw new RpcError("CONFLICT", { message: `liveness of ${key} not renewed` });
}
