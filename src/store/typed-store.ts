import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import type { KeyValue, KvStore, StoreCallOptions } from "./kv-store.js";

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
