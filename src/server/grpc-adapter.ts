import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import type { PeerCertificate as TlsPeerCertificate } from "node:tls";
import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  type BoundMethod,
  type CallContext,
  type CallObserver,
  Code,
  composeStages,
  handlerResult,
  type Logger,
  type Next,
  type PeerCertificate,
  preEncoded,
  RpcError,
  type ServiceBinding,
  type Stage,
  toRpcError,
} from "../core/index.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";

/** Options of {@link createGrpcAdapter}. */
export interface GrpcAdapterOptions {
  readonly services: readonly ServiceBinding[];
  /** Pipeline stages, outermost first. */
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  /** Responses larger than this fail with RESOURCE_EXHAUSTED instead of being sent. */
  readonly maxResponseBytes: number;
  /**
   * A streaming response whose client reads nothing for this long (the
   * transport stays full) ends with RESOURCE_EXHAUSTED STREAM_STALLED, so a
   * peer that stops reading holds no handler and no buffers. Unset: no limit.
   */
  readonly writeStallMs?: number;
  readonly now?: () => number;
}

/** Service definitions and handlers for grpc-js, plus the calls in flight. */
export interface GrpcAdapter {
  /** Adds every service to a grpc-js server. */
  register(server: grpc.Server): void;
  /** Calls started and not yet finished. */
  inFlight(): number;
  /** Resolves when no call is in flight. */
  idle(): Promise<void>;
  /** Aborts the signal of every call in flight (hard stop). */
  abortAll(reason: string): void;
}

const REQUEST_ID = "x-request-id";
const ERROR_REASON = "debvisor-error-reason";
type AnyCall =
  | grpc.ServerUnaryCall<Buffer, Buffer>
  | grpc.ServerWritableStream<Buffer, Buffer>
  | grpc.ServerDuplexStream<Buffer, Buffer>;

/**
 * Maps grpc-js calls onto the transport-neutral pipeline: metadata, the
 * verified peer certificate, deadline and cancellation go in; responses and
 * RpcErrors come out as gRPC messages and statuses. Messages are carried as
 * raw bytes through grpc-js and decoded here, so a malformed request is an
 * INVALID_ARGUMENT from our catalogue rather than a library error.
 */
export function createGrpcAdapter(options: GrpcAdapterOptions): GrpcAdapter {
  const now = options.now ?? Date.now;
  const inflight = new Set<AbortController>();
  let idleWaiters: (() => void)[] = [];
  const pipelines = new Map<string, Next>();

  function pipelineFor(method: BoundMethod): Next {
    let p = pipelines.get(method.spec.path);
    if (p === undefined) {
      const handler = method.handler as (request: unknown, ctx: CallContext) => unknown;
      const kind = method.spec.kind;
      p = composeStages(options.stages, async (inv) =>
        handlerResult(kind, await handler(inv.request as never, inv.ctx)),
      );
      pipelines.set(method.spec.path, p);
    }
    return p;
  }

  function finish(controller: AbortController): void {
    inflight.delete(controller);
    if (inflight.size === 0 && idleWaiters.length > 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  function startCall(
    call: AnyCall,
    method: BoundMethod,
  ): { ctx: CallContext; controller: AbortController; done: () => void } {
    const controller = new AbortController();
    inflight.add(controller);
    const requestId = randomUUID();
    const startedAt = now();
    const rawDeadline = call.getDeadline();
    const deadlineMs = rawDeadline instanceof Date ? rawDeadline.getTime() : rawDeadline;
    const deadline = Number.isFinite(deadlineMs) ? deadlineMs : undefined;
    let timer: NodeJS.Timeout | undefined;
    if (deadline !== undefined) {
      timer = setTimeout(
        () => controller.abort(new RpcError("DEADLINE_EXCEEDED")),
        Math.max(0, deadline - startedAt),
      );
      timer.unref();
    }
    const onCancel = () => controller.abort(new RpcError("CANCELLED"));
    const events = call as NodeJS.EventEmitter;
    events.once("cancelled", onCancel);
    const metadata = call.metadata;
    const ctx: CallContext = {
      requestId,
      method: method.spec,
      peer: { address: call.getPeer(), certificate: verifiedCertificate(call) },
      headers: {
        get(name) {
          const v = metadata.get(name)[0];
          return typeof v === "string" ? v : undefined;
        },
      },
      deadline,
      signal: controller.signal,
      startedAt,
      log: options.logger.child({ requestId, method: method.spec.path }),
      notes: {},
    };
    options.observer.onStart(ctx);
    return {
      ctx,
      controller,
      done: () => {
        if (timer !== undefined) clearTimeout(timer);
        events.removeListener("cancelled", onCancel);
        finish(controller);
      },
    };
  }

  function settle(ctx: CallContext, error: RpcError | undefined): void {
    if (error !== undefined) {
      const level = error.code === Code.Internal ? "error" : "debug";
      ctx.log[level](
        { code: error.code, reason: error.reason, err: error.cause ?? error },
        "call failed",
      );
    }
    options.observer.onEnd(ctx, error, now() - ctx.startedAt);
  }

  function encode(schema: DescMessage, init: unknown): Buffer {
    // A handler may have attached the encoding already (core attachEncoding).
    const bytes = preEncoded(init, schema) ?? toBinary(schema, create(schema, init as never));
    if (bytes.byteLength > options.maxResponseBytes) {
      throw new RpcError("MESSAGE_TOO_LARGE", {
        message: "response exceeds the size limit; ask for a smaller page",
        cause: new Error(`response of ${bytes.byteLength} bytes > ${options.maxResponseBytes}`),
      });
    }
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  function decode(schema: DescMessage, bytes: Buffer): unknown {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      throw new RpcError("REQUEST_MALFORMED", { cause: err });
    }
  }

  function unary(method: BoundMethod): grpc.handleUnaryCall<Buffer, Buffer> {
    const { input, output } = method.spec.desc;
    const pipeline = pipelineFor(method);
    return (call, callback) => {
      const { ctx, done } = startCall(call, method);
      (async () => {
        const request = decode(input, call.request);
        options.observer.onMessage?.(ctx, "received");
        const result = await pipeline({ ctx, request });
        if (result.kind !== "unary")
          throw new TypeError(`${ctx.method.path}: a stream from a unary method`);
        return encode(output, result.response);
      })().then(
        (response) => {
          done();
          options.observer.onMessage?.(ctx, "sent");
          settle(ctx, undefined);
          callback(null, response, trailers(ctx));
        },
        (err: unknown) => {
          const error = toRpcError(err);
          done();
          settle(ctx, error);
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
      const { ctx, controller, done } = startCall(call, method);
      const run = async () => {
        let request: unknown;
        if (clientStreams) {
          request = decodeStream(input, call as grpc.ServerDuplexStream<Buffer, Buffer>, ctx);
        } else {
          request = decode(input, (call as grpc.ServerWritableStream<Buffer, Buffer>).request);
          options.observer.onMessage?.(ctx, "received");
        }
        const result = await pipeline({ ctx, request });
        if (result.kind !== "stream")
          throw new TypeError(`${ctx.method.path}: no stream from a streaming method`);
        for await (const item of result.responses) {
          if (ctx.signal.aborted) break;
          const bytes = encode(output, item);
          const flowing = call.write(bytes);
          options.observer.onMessage?.(ctx, "sent");
          if (!flowing) await waitDrain(call, ctx.signal, options.writeStallMs);
        }
      };
      // The stream is over either way: whatever the handler still awaits (its
      // reads, its timers) sees the call's signal abort.
      const over = () => controller.abort(new RpcError("CANCELLED"));
      run().then(
        () => {
          over();
          done();
          settle(ctx, undefined);
          if (!call.cancelled) call.end(trailers(ctx));
        },
        (err: unknown) => {
          const error = toRpcError(err);
          over();
          done();
          settle(ctx, error);
          // Trailers would queue behind the unread data: reset the stream instead.
          if (error.reason === "STREAM_STALLED") resetStream(call);
          else if (!call.cancelled) call.emit("error", toStatus(error, ctx));
        },
      );
    };
  }

  /**
   * A stream's requests, decoded one by one. Not an async generator: a
   * suspended generator keeps the last message it yielded in its frame until
   * the next one arrives, and an agent's last heartbeat (its whole report)
   * would then stay in memory per stream for the stream's life.
   */
  function decodeStream(
    schema: DescMessage,
    call: grpc.ServerDuplexStream<Buffer, Buffer>,
    ctx: CallContext,
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
          message = decode(schema, read.value);
        } catch (err) {
          finished = true;
          void reads.return?.();
          throw err;
        }
        options.observer.onMessage?.(ctx, "received");
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

  return {
    register(server) {
      for (const service of options.services) {
        const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
        const impl: grpc.UntypedServiceImplementation = {};
        for (const method of service.methods) {
          const { kind, name, path, desc } = method.spec;
          definition[name] = {
            path,
            requestStream: kind === "client_streaming" || kind === "bidi_streaming",
            responseStream: kind === "server_streaming" || kind === "bidi_streaming",
            requestSerialize: (b: Buffer) => b,
            requestDeserialize: (b: Buffer) => b,
            responseSerialize: (b: Buffer) => b,
            responseDeserialize: (b: Buffer) => b,
            originalName: desc.localName,
          };
          impl[name] = kind === "unary" ? unary(method) : streaming(method);
        }
        server.addService(definition as grpc.ServiceDefinition, impl);
      }
    },
    inFlight: () => inflight.size,
    idle: () =>
      inflight.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => idleWaiters.push(resolve)),
    abortAll(reason) {
      for (const c of inflight)
        c.abort(new RpcError("SHUTTING_DOWN", { cause: new Error(reason) }));
    },
  };
}

function trailers(ctx: CallContext): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(REQUEST_ID, ctx.requestId);
  return md;
}

/** The status a client sees: the catalogue message, never the cause; INTERNAL carries only the request id. */
function toStatus(error: RpcError, ctx: CallContext): Partial<grpc.StatusObject> {
  const md = trailers(ctx);
  md.set(ERROR_REASON, error.reason);
  if (error.retryAfterMs !== undefined) md.set("retry-after-ms", String(error.retryAfterMs));
  if (error.fieldViolations !== undefined && error.fieldViolations.length > 0) {
    // The standard rich error model: google.rpc.Status with a BadRequest detail.
    const status = create(StatusSchema, {
      code: error.code,
      message: error.clientMessage,
      details: [
        anyPack(
          BadRequestSchema,
          create(BadRequestSchema, { fieldViolations: [...error.fieldViolations] }),
        ),
      ],
    });
    md.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  }
  const details =
    error.code === Code.Internal
      ? `internal error (request id ${ctx.requestId})`
      : error.clientMessage;
  return { code: error.code as number as grpc.status, details, metadata: md };
}

/** The peer certificate, only if the TLS layer verified it against the client CA. */
function verifiedCertificate(call: AnyCall): PeerCertificate | undefined {
  const cert = call.getAuthContext().sslPeerCertificate as TlsPeerCertificate | undefined;
  if (cert === undefined) return undefined;
  const cn = cert.subject?.CN;
  return {
    // Several CNs make the identity ambiguous: treat as none.
    commonName: typeof cn === "string" ? cn : "",
    subject: formatName(cert.subject),
    issuer: formatName(cert.issuer),
    serialNumber: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    ...(Number.isFinite(Date.parse(cert.valid_to))
      ? { notAfterMs: Date.parse(cert.valid_to) }
      : {}),
  };
}

function formatName(name: TlsPeerCertificate["subject"] | undefined): string {
  if (name === undefined) return "";
  return Object.entries(name)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
    .join(",");
}

/**
 * Resets a call's HTTP/2 stream with ENHANCE_YOUR_CALM (the client sees
 * RESOURCE_EXHAUSTED), dropping whatever is buffered for it. grpc-js has no
 * public way to abandon a call whose peer does not read (its status waits
 * behind the unread messages), so this reaches its server call's stream.
 */
function resetStream(call: unknown): void {
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

function waitDrain(
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
