import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import type { Compare, KeyValue, KvStore, StoreCallOptions, WatchEvent } from "./kv-store.js";
import { LOST, retryWhileLost } from "./retry-while-lost.js";

/** A decoded message with the revision it was last written at (for compare-and-swap). */
export interface Versioned<T> {
  readonly message: T;
  readonly modRevision: number;
}

/** Encodes a message for storage. */
export function encodeMessage<D extends DescMessage>(
  schema: D,
  message: MessageInitShape<D>,
): Uint8Array {
  return toBinary(schema, create(schema, message));
}

/** Decodes a stored value; a value that does not decode is INTERNAL (the cause names the key). */
export function decodeMessage<D extends DescMessage>(schema: D, kv: KeyValue): MessageShape<D> {
  try {
    return fromBinary(schema, kv.value);
  } catch (err) {
    throw new RpcError("INTERNAL", {
      cause: new Error(`undecodable ${schema.typeName} at ${kv.key}`, { cause: err }),
    });
  }
}

/** Reads and decodes one message. */
export async function getMessage<D extends DescMessage>(
  store: KvStore,
  schema: D,
  key: string,
  options?: StoreCallOptions,
): Promise<Versioned<MessageShape<D>> | undefined> {
  const kv = await store.get(key, options);
  return kv === undefined
    ? undefined
    : { message: decodeMessage(schema, kv), modRevision: kv.modRevision };
}

/** Every key under a prefix, page by page, in key order. */
export async function* rangeAll(
  store: KvStore,
  prefix: string,
  options?: StoreCallOptions & { pageSize?: number },
): AsyncIterable<KeyValue> {
  let after: string | undefined;
  for (;;) {
    const page = await store.range(prefix, {
      limit: options?.pageSize ?? 1000,
      after,
      signal: options?.signal,
    });
    for (const kv of page.kvs) yield kv;
    if (!page.more || page.kvs.length === 0) return;
    after = page.kvs[page.kvs.length - 1]?.key;
  }
}

/**
 * Read-modify-write of one message under compare-and-swap, retried (up to
 * `attempts`, default 8) while another writer gets there first; CONFLICT
 * after that. `change` sees the current message (undefined when absent) and
 * returns the next one, or undefined to write nothing. Resolves with what
 * was written (or left), its revision (0: absent) and whether a write happened.
 * With a version already in hand (from a watch), see `createCasBatch`.
 * `compares` are added to each attempt's transaction (an election that
 * must still hold): one that fails makes every attempt fail, so CONFLICT.
 */
export async function updateMessage<D extends DescMessage>(
  store: KvStore,
  schema: D,
  key: string,
  change: (current: MessageShape<D> | undefined) => MessageShape<D> | undefined,
  options?: StoreCallOptions & { attempts?: number; compares?: readonly Compare[] },
): Promise<{ message: MessageShape<D> | undefined; written: boolean; modRevision: number }> {
  return retryWhileLost(options?.attempts ?? 8, async () => {
    const current = await getMessage(store, schema, key, options);
    const next = change(current?.message);
    if (next === undefined)
      return { message: current?.message, written: false, modRevision: current?.modRevision ?? 0 };
    const txn = await store.txn(
      {
        compares: [{ key, modRevision: current?.modRevision ?? 0 }, ...(options?.compares ?? [])],
        success: [{ type: "put", key, value: toBinary(schema, next) }],
      },
      options,
    );
    return txn.succeeded ? { message: next, written: true, modRevision: txn.revision } : LOST;
  });
}

/** A watch event's key and value as a KeyValue (revisions other than the write's unknown: 0), for decoding. */
export function keyValueOf(event: WatchEvent): KeyValue {
  return {
    key: event.key,
    value: event.value,
    createRevision: 0,
    modRevision: event.revision,
    version: 0,
    lease: event.lease,
  };
}
