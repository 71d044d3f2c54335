// Flow control of a streaming response on grpc-js: waiting for a full
// transport to drain (within the write-stall limit) and abandoning a call
// whose peer stopped reading.

import http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { RpcError } from "../core/index.js";

/**
 * Resets a call's HTTP/2 stream with ENHANCE_YOUR_CALM (the client sees
 * RESOURCE_EXHAUSTED), dropping whatever is buffered for it. grpc-js has no
 * public way to abandon a call whose peer does not read (its status waits
 * behind the unread messages), so this reaches its server call's stream.
 */
export function resetStream(call: unknown): void {
  let at = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 4 && at !== undefined && at !== null; depth++) {
    const stream = (at as { stream?: { close?: (code: number) => void; destroyed?: boolean } })
      .stream;
    if (typeof stream?.close === "function") {
      if (stream.destroyed !== true) stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      return;
    }
    at = (at as { nextCall?: unknown }).nextCall;
  }
  (call as NodeJS.EventEmitter).emit("error", { code: grpc.status.RESOURCE_EXHAUSTED });
}

/**
 * Resolves when `call` drains or `signal` aborts; rejects with STREAM_STALLED
 * after `stallMs` without either (never, when unset).
 */
export function waitDrain(
  call: NodeJS.EventEmitter,
  signal: AbortSignal,
  stallMs: number | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer =
      stallMs === undefined
        ? undefined
        : setTimeout(() => {
            cleanup();
            reject(new RpcError("STREAM_STALLED"));
          }, stallMs);
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      call.removeListener("drain", done);
      signal.removeEventListener("abort", done);
    };
    const done = () => {
      cleanup();
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
