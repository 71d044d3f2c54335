/**
 * The state store contract, shaped like etcd's model so the etcd backend is
 * natural and the embedded SQLite backend is honest about what it promises.
 *
 * Keys are printable ASCII (0x21-0x7e), at most {@link MAX_KEY_LENGTH}
 * characters, ordered bytewise. Values are bytes (protobuf messages; see
 * typed-store.ts), at most {@link MAX_VALUE_BYTES}. Every write is durable
 * before its promise resolves. Every write request (put, delete, txn) moves
 * the store's revision forward by exactly one; all operations of one txn
 * share that revision.
 */

/** Longest key, in characters. */
export const MAX_KEY_LENGTH = 512;
/** Largest value, in bytes (etcd's default request limit is 1.5 MiB). */
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Largest page of a range read. */
export const MAX_RANGE_LIMIT = 10_000;
/** Largest number of operations in one txn (etcd's default is 128). */
export const MAX_TXN_OPS = 128;

/** A stored key with its value and revisions. */
export interface KeyValue {
  readonly key: string;
  readonly value: Uint8Array;
  /** Revision of the write that created the key. */
  readonly createRevision: number;
  /** Revision of the last write to the key. */
  readonly modRevision: number;
  /** Number of writes since creation (1 after the first put). */
  readonly version: number;
  /** Lease the key is attached to, if any. */
  readonly lease: string | undefined;
}

/** Options every call takes. */
export interface StoreCallOptions {
  /** Aborting rejects the call with CANCELLED; a write aborted before it started changes nothing. */
  readonly signal?: AbortSignal;
}

/** Options of a put. */
export interface PutOptions extends StoreCallOptions {
  /** Attach the key to this lease: it is deleted when the lease expires. */
  readonly lease?: string;
}

/** Options of a range read. */
export interface RangeOptions extends StoreCallOptions {
  /** At most this many keys (default 1000, at most {@link MAX_RANGE_LIMIT}). */
  readonly limit?: number;
  /** Continue after this key (the last key of the previous page). */
  readonly after?: string;
}

/** One page of a range read. */
export interface RangeResult {
  readonly kvs: KeyValue[];
  /** True when more keys follow; pass the last key as `after`. */
  readonly more: boolean;
  /** Store revision the page was read at. */
  readonly revision: number;
}

/**
 * A condition of a txn on one key's modification revision. `modRevision: 0`
 * means "the key does not exist" (create-if-absent).
 */
export interface Compare {
  readonly key: string;
  readonly modRevision: number;
}

/** An operation of a txn. */
export type TxnOp =
  | {
      readonly type: "put";
      readonly key: string;
      readonly value: Uint8Array;
      readonly lease?: string;
    }
  | { readonly type: "delete"; readonly key: string };

/** A transaction: if every compare holds, run `success`, else `failure`. */
export interface TxnRequest {
  readonly compares: readonly Compare[];
  readonly success: readonly TxnOp[];
  readonly failure?: readonly TxnOp[];
}

/** Outcome of a txn. */
export interface TxnResult {
  readonly succeeded: boolean;
  /** Store revision after the txn (unchanged when the branch taken had no operations). */
  readonly revision: number;
}

/** A change seen by a watch. */
export interface WatchEvent {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The new value; empty for a delete. */
  readonly value: Uint8Array;
  /** Revision of the write. */
  readonly revision: number;
  /** After a put, the lease the key is attached to: etcd tells it; the SQLite store leaves it undefined. */
  readonly lease?: string;
}

/** A lease: keys attached to it are deleted when it is not kept alive for its TTL. */
export interface Lease {
  readonly id: string;
  readonly ttlMs: number;
  /** Renews the lease for another TTL; LEASE_NOT_FOUND once it has expired. */
  keepAlive(options?: StoreCallOptions): Promise<void>;
  /** Ends the lease now, deleting its keys. */
  revoke(options?: StoreCallOptions): Promise<void>;
}

/** Which implementation a store is. */
export type StoreBackend = "sqlite" | "etcd";

/** The store every domain repository is written against. */
export interface KvStore {
  readonly backend: StoreBackend;
  get(key: string, options?: StoreCallOptions): Promise<KeyValue | undefined>;
  /** Writes a key; resolves with the new store revision once durable. */
  put(key: string, value: Uint8Array, options?: PutOptions): Promise<number>;
  delete(key: string, options?: StoreCallOptions): Promise<{ revision: number; deleted: boolean }>;
  /** Keys starting with `prefix`, in key order, one page at a time. */
  range(prefix: string, options?: RangeOptions): Promise<RangeResult>;
  txn(request: TxnRequest, options?: StoreCallOptions): Promise<TxnResult>;
  /**
   * Changes to keys starting with `prefix`, from revision `fromRevision`
   * (inclusive) on, in revision order, none missed or repeated; then live
   * ones until `signal` aborts. Read a range, then watch from its revision
   * + 1, and nothing falls between. WATCH_COMPACTED when history that old
   * is gone.
   */
  watch(
    prefix: string,
    fromRevision: number,
    options: { readonly signal: AbortSignal },
  ): AsyncIterable<WatchEvent>;
  /** Grants a lease of at least `ttlMs` (etcd rounds up to whole seconds and has a floor of its own). */
  grantLease(ttlMs: number, options?: StoreCallOptions): Promise<Lease>;
  /**
   * A handle on a lease granted earlier, possibly by another process (its id
   * as a key's `lease` shows it): keeping it alive renews that lease for its
   * granted TTL; LEASE_NOT_FOUND once it has expired. `ttlMs` is what the
   * caller knows of its TTL, reported by the handle.
   */
  lease(id: string, ttlMs: number): Lease;
  /** The current store revision. */
  revision(options?: StoreCallOptions): Promise<number>;
  /** Releases connections and timers; pending writes finish first. */
  close(): Promise<void>;
}
