// Messages on grpc-js travel as raw bytes and are encoded and decoded here,
// so a malformed request is an INVALID_ARGUMENT from our catalogue rather
// than a library error, and an oversize response is refused before it is sent.

import type { Readable } from "node:stream";
import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { type CallContext, type CallObserver, preEncoded, RpcError } from "../core/index.js";

/** Encodes a response; MESSAGE_TOO_LARGE if it exceeds `maxResponseBytes`. */
export function encodeResponse(
  schema: DescMessage,
  init: unknown,
  maxResponseBytes: number,
): Buffer {
  // A handler may have attached the encoding already (core attachEncoding).
  const bytes = preEncoded(init, schema) ?? toBinary(schema, create(schema, init as never));
  if (bytes.byteLength > maxResponseBytes) {
    throw new RpcError("MESSAGE_TOO_LARGE", {
      message: "response exceeds the size limit; ask for a smaller page",
      cause: new Error(`response of ${bytes.byteLength} bytes > ${maxResponseBytes}`),
    });
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes a request; REQUEST_MALFORMED if it does not decode. */
export function decodeRequest(schema: DescMessage, bytes: Buffer): unknown {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    throw new RpcError("REQUEST_MALFORMED", { cause: err });
  }
}

/**
 * A stream's requests, decoded one by one. Not an async generator: a
 * suspended generator keeps the last message it yielded in its frame until
 * the next one arrives, and an agent's last heartbeat (its whole report)
 * would then stay in memory per stream for the stream's life.
 */
export function decodeStream(
  schema: DescMessage,
  call: grpc.ServerDuplexStream<Buffer, Buffer>,
  ctx: CallContext,
  observer: CallObserver,
): AsyncIterable<unknown> {
  // A plain `for await` destroys the duplex when the reads end, which also
  // kills the write side before the responses and status are sent.
  const reads = (call as unknown as Readable).iterator({
    destroyOnReturn: false,
  }) as AsyncIterableIterator<Buffer>;
  // Like a generator, it is finished by its end, by return() and by a
  // message that does not decode: nothing after that is read or counted.
  let finished = false;
  const iterator: AsyncIterableIterator<unknown> = {
    async next() {
      if (finished) return { done: true, value: undefined };
      const read = await reads.next();
      if (read.done === true) {
        finished = true;
        return { done: true, value: undefined };
      }
      let message: unknown;
      try {
        message = decodeRequest(schema, read.value);
      } catch (err) {
        finished = true;
        void reads.return?.();
        throw err;
      }
      observer.onMessage?.(ctx, "received");
      return { done: false, value: message };
    },
    async return() {
      finished = true;
      await reads.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}
