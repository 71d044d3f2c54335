import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { abortError } from "../core/index.js";
import type { KvStore, StoreCallOptions, TxnRequest } from "./kv-store.js";
import { MAX_TXN_OPS } from "./kv-store.js";
import { updateMessage, type Versioned } from "./typed-store.js";

/** What {@link CasBatch.update} resolves with: as {@link updateMessage}. */
export interface BatchedUpdate<T> {
  readonly message: T | undefined;
  readonly written: boolean;
  readonly modRevision: number;
}

/**
 * Compare-and-swap updates of many keys, made in the same turn of the event
 * loop, written together in one txn (the store's round trip and its raft
 * proposal are paid once, not once per key).
 */
export interface CasBatch {
  /**
   * {@link updateMessage} of `key`, tried first on `known` (a version already in hand,
   * e.g. from a watch) instead of a read: queued, and written with the others queued in
   * this turn. When another writer got to a key first, the batch is split until the
   * stale keys are alone, and each of those is updated on its own (read, change,
   * compare-and-swap, as updateMessage). `change` must decline only what it would also
   * decline on any later version: declined on `known`, nothing is written or read.
   */
  update<D extends DescMessage>(
    schema: D,
    key: string,
    known: Versioned<MessageShape<D>>,
    change: (current: MessageShape<D> | undefined) => MessageShape<D> | undefined,
    options?: StoreCallOptions,
  ): Promise<BatchedUpdate<MessageShape<D>>>;
}

interface Queued {
  readonly key: string;
  readonly modRevision: number;
  readonly value: Uint8Array;
  readonly next: unknown;
  /** The key on its own, as updateMessage does it (after a failed compare). */
  readonly alone: () => Promise<BatchedUpdate<unknown>>;
  readonly signal: AbortSignal | undefined;
  resolve(u: BatchedUpdate<unknown>): void;
  reject(err: unknown): void;
}

/** Keys in one txn at most: a compare and a put each, within the store's txn limit. */
const MAX_KEYS = Math.floor(MAX_TXN_OPS / 2);
/** Bytes of values in one txn at most (etcd refuses requests over 1.5 MiB by default). */
const MAX_BYTES = 512 * 1024;

/** Creates a {@link CasBatch} over `store`. */
export function createCasBatch(store: KvStore): CasBatch {
  let queue: Queued[] = [];

  /** Writes `items` in one txn; on a failed compare, halves them until the stale ones are alone. */
  async function write(items: Queued[]): Promise<void> {
    const live = items.filter((i) => {
      if (i.signal?.aborted !== true) return true;
      i.reject(abortError(i.signal));
      return false;
    });
    if (live.length === 0) return;
    let txn: { succeeded: boolean; revision: number };
    try {
      txn = await store.txn(request(live));
    } catch (err) {
      // Not known whether it was applied: told, as a single write's failure is.
      for (const i of live) i.reject(err);
      return;
    }
    if (txn.succeeded) {
      for (const i of live)
        i.resolve({ message: i.next, written: true, modRevision: txn.revision });
      return;
    }
    if (live.length === 1) {
      const [stale] = live as [Queued];
      await stale.alone().then(stale.resolve, stale.reject);
      return;
    }
    const half = Math.ceil(live.length / 2);
    await Promise.all([write(live.slice(0, half)), write(live.slice(half))]);
  }

  async function flush(): Promise<void> {
    const items = queue;
    queue = [];
    // One txn per key (a key queued twice goes in a later txn), bounded in size; the txns
    // go one after the other, so a key's updates land in the order they were asked.
    let chunk: Queued[] = [];
    let keys = new Set<string>();
    let bytes = 0;
    const chunks: Queued[][] = [];
    for (const i of items) {
      if (
        chunk.length > 0 &&
        (chunk.length >= MAX_KEYS || bytes + i.value.byteLength > MAX_BYTES || keys.has(i.key))
      ) {
        chunks.push(chunk);
        chunk = [];
        keys = new Set();
        bytes = 0;
      }
      chunk.push(i);
      keys.add(i.key);
      bytes += i.value.byteLength;
    }
    if (chunk.length > 0) chunks.push(chunk);
    for (const c of chunks)
      await write(c).catch((err: unknown) => {
        for (const i of c) i.reject(err);
      });
  }

  return {
    update(schema, key, known, change, options) {
      const next = change(known.message);
      // Declined on the version in hand: as updateMessage, nothing is written.
      if (next === undefined)
        return Promise.resolve({
          message: known.message,
          written: false,
          modRevision: known.modRevision,
        });
      return new Promise((resolve, reject) => {
        if (queue.length === 0) setImmediate(() => void flush());
        queue.push({
          key,
          modRevision: known.modRevision,
          value: toBinary(schema, next),
          next,
          alone: () => updateMessage(store, schema, key, change, options),
          signal: options?.signal,
          resolve: resolve as (u: BatchedUpdate<unknown>) => void,
          reject,
        });
      });
    },
  };
}

function request(items: readonly Queued[]): TxnRequest {
  return {
    compares: items.map((i) => ({ key: i.key, modRevision: i.modRevision })),
    success: items.map((i) => ({ type: "put" as const, key: i.key, value: i.value })),
  };
}
