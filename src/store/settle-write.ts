/**
 * The outcome of a conditional write that threw, made definite. A txn whose
 * reply was lost (a deadline passed, a connection reset, etcd electing a
 * leader) may still be applied later: etcd can hold the proposal and commit
 * it after the caller has read the key back and found it unchanged. A caller
 * that then took the write as not done acts on a wrong belief (the HA
 * restore: a start decided, counted and its mark cleared, but never sent).
 */
import type { KeyValue, KvStore, StoreCallOptions } from "./kv-store.js";

/**
 * After a txn that compared `key`'s modRevision with `rev` (> 0) and threw:
 * reads the key, and if it is still at `rev`, writes it again as it is under
 * the same compare. Whichever of the two etcd applies second fails its
 * compare, so once this returns, the lost txn has either landed (the key as
 * returned shows it) or never will. Returns the key as it is then (undefined:
 * deleted meanwhile); throws when the store could not be asked, the outcome
 * still unknown. A key that did not exist (`rev` 0) cannot be rewritten as it
 * is: that case is not covered.
 */
export async function settleWrite(
  store: KvStore,
  key: string,
  rev: number,
  options?: StoreCallOptions,
): Promise<KeyValue | undefined> {
  const now = await store.get(key, options);
  if (now === undefined || now.modRevision !== rev) return now;
  const fence = await store.txn(
    {
      compares: [{ key, modRevision: rev }],
      success: [{ type: "put", key, value: now.value, lease: now.lease }],
    },
    options,
  );
  // Refused: something landed since the read, perhaps the lost txn itself.
  return fence.succeeded ? { ...now, modRevision: fence.revision } : store.get(key, options);
}
