// The grpc-js handlers of bound methods: each call runs through the
// pipeline of its method, unary calls answer once, streaming calls write
// their responses with flow control and end with a status.

import type * as grpc from "@grpc/grpc-js";
import {
  type BoundMethod,
  type CallContext,
  type CallObserver,
  composeStages,
  handlerResult,
  type Next,
  RpcError,
  type Stage,
  toRpcError,
} from "../core/index.js";
import type { GrpcCallTracker } from "./grpc-call-tracker.js";
import { decodeRequest, decodeStream, encodeResponse } from "./grpc-codec.js";
import { toStatus, trailers } from "./grpc-status.js";
import { resetStream, waitDrain } from "./grpc-stream-flow.js";

/** What {@link createGrpcHandlers} needs; see GrpcAdapterOptions for the meaning of each. */
export interface GrpcHandlersDeps {
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly maxResponseBytes: number;
  readonly writeStallMs: number | undefined;
  readonly calls: GrpcCallTracker;
}

/** grpc-js handlers for bound methods; see {@link createGrpcHandlers}. */
export interface GrpcHandlers {
  unary(method: BoundMethod): grpc.handleUnaryCall<Buffer, Buffer>;
  streaming(
    method: BoundMethod,
  ): grpc.handleServerStreamingCall<Buffer, Buffer> & grpc.handleBidiStreamingCall<Buffer, Buffer>;
}

/** Creates the handler factories; each method's pipeline is composed once and kept. */
export function createGrpcHandlers(deps: GrpcHandlersDeps): GrpcHandlers {
  const { observer, maxResponseBytes, calls } = deps;
  const pipelines = new Map<string, Next>();

  function pipelineFor(method: BoundMethod): Next {
    let p = pipelines.get(method.spec.path);
    if (p === undefined) {
      const handler = method.handler as (request: unknown, ctx: CallContext) => unknown;
      const kind = method.spec.kind;
      p = composeStages(deps.stages, async (inv) =>
        handlerResult(kind, await handler(inv.request as never, inv.ctx)),
      );
      pipelines.set(method.spec.path, p);
    }
    return p;
  }

  function unary(method: BoundMethod): grpc.handleUnaryCall<Buffer, Buffer> {
    const { input, output } = method.spec.desc;
    const pipeline = pipelineFor(method);
    return (call, callback) => {
      const { ctx, done } = calls.start(call, method);
      (async () => {
        const request = decodeRequest(input, call.request);
        observer.onMessage?.(ctx, "received");
        const result = await pipeline({ ctx, request });
        if (result.kind !== "unary")
          throw new TypeError(`${ctx.method.path}: a stream from a unary method`);
        return encodeResponse(output, result.response, maxResponseBytes);
      })().then(
        (response) => {
          done();
          observer.onMessage?.(ctx, "sent");
          calls.settle(ctx, undefined);
          callback(null, response, trailers(ctx));
        },
        (err: unknown) => {
          const error = toRpcError(err);
          done();
          calls.settle(ctx, error);
          callback(toStatus(error, ctx));
        },
      );
    };
  }

  function streaming(
    method: BoundMethod,
  ): grpc.handleServerStreamingCall<Buffer, Buffer> & grpc.handleBidiStreamingCall<Buffer, Buffer> {
    const { input, output } = method.spec.desc;
    const pipeline = pipelineFor(method);
    const clientStreams =
      method.spec.kind === "bidi_streaming" || method.spec.kind === "client_streaming";
    return (
      call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>,
    ) => {
      const { ctx, controller, done } = calls.start(call, method);
      const run = async () => {
        let request: unknown;
        if (clientStreams) {
          request = decodeStream(
            input,
            call as grpc.ServerDuplexStream<Buffer, Buffer>,
            ctx,
            observer,
          );
        } else {
          request = decodeRequest(
            input,
            (call as grpc.ServerWritableStream<Buffer, Buffer>).request,
          );
          observer.onMessage?.(ctx, "received");
        }
        const result = await pipeline({ ctx, request });
        if (result.kind !== "stream")
          throw new TypeError(`${ctx.method.path}: no stream from a streaming method`);
        for await (const item of result.responses) {
          if (ctx.signal.aborted) break;
          const bytes = encodeResponse(output, item, maxResponseBytes);
          const flowing = call.write(bytes);
          observer.onMessage?.(ctx, "sent");
          if (!flowing) await waitDrain(call, ctx.signal, deps.writeStallMs);
        }
      };
      // The stream is over either way: whatever the handler still awaits (its
      // reads, its timers) sees the call's signal abort.
      const over = () => controller.abort(new RpcError("CANCELLED"));
      run().then(
        () => {
          over();
          done();
          calls.settle(ctx, undefined);
          if (!call.cancelled) call.end(trailers(ctx));
        },
        (err: unknown) => {
          const error = toRpcError(err);
          over();
          done();
          calls.settle(ctx, error);
          // Trailers would queue behind the unread data: reset the stream instead.
          if (error.reason === "STREAM_STALLED") resetStream(call);
          else if (!call.cancelled) call.emit("error", toStatus(error, ctx));
        },
      );
    };
  }

  return { unary, streaming };
}
