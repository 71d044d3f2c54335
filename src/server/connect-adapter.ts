import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code as ConnectCode,
  ConnectError,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import {
  createAsyncIterable,
  encodeEnvelope,
  readAllBytes,
  type UniversalHandler,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  createEndStreamSerialization,
  endStreamFlag,
  errorFromJsonBytes,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  setTrailerStatus,
  trailerFlag,
  trailerParse,
  trailerSerialize,
} from "@connectrpc/connect/protocol-grpc-web";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import {
  type BoundMethod,
  type CallContext,
  type CallObserver,
  Code,
  composeStages,
  handlerResult,
  type Logger,
  type Next,
  RpcError,
  type ServiceBinding,
  type Stage,
  toRpcError,
} from "../core/index.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";

/** What the panel's listener knows of a request before the pipeline runs. */
export interface ConnectCaller {
  /** `host:port` of the remote socket. */
  readonly address: string;
  /** The credential to hand the authentication stage (`Bearer <token>`), if any. */
  readonly authorization: string | undefined;
  /** The sign-in session the call belongs to: its streams end when the session does. */
  readonly sessionId: string | undefined;
}

/** Options of {@link createConnectAdapter}. */
export interface ConnectAdapterOptions {
  readonly services: readonly ServiceBinding[];
  /** The very stages the gRPC adapter runs, outermost first. */
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
  readonly maxResponseBytes: number;
  /** Served under this path prefix (e.g. `/rpc`). */
  readonly pathPrefix: string;
  readonly caller: (req: {
    headers: Record<string, string | string[] | undefined>;
    socket: { remoteAddress?: string; remotePort?: number };
  }) => ConnectCaller;
  readonly now?: () => number;
}

/** The Connect (and gRPC-Web) form of the services, for browsers. */
export interface ConnectAdapter {
  /** A Node request handler; answers 404 outside `pathPrefix`. */
  readonly handle: NodeHandler;
  inFlight(): number;
  /** Aborts every call in flight (hard stop). */
  abortAll(reason: string): void;
  /** Ends the calls of one sign-in session now (logout, revocation, refresh reuse). */
  endSession(sessionId: string): void;
}

/** A Node request listener (http, https or http2). */
export type NodeHandler = (
  req: import("node:http").IncomingMessage | import("node:http2").Http2ServerRequest,
  res: import("node:http").ServerResponse | import("node:http2").Http2ServerResponse,
) => void;

const CALLER = createContextKey<ConnectCaller | undefined>(undefined);

/**
 * Serves unary and server-streaming methods over the Connect protocol with
 * `@connectrpc/connect-node`, running the same stage pipeline (composed by
 * core's composeStages) and the same handlers as the gRPC adapter, and the
 * same observer, so the panel gets authentication, tenancy, authorization,
 * rate limits, validation, audit and metrics unchanged. Client- and
 * bidi-streaming methods are not served here: browsers cannot make them.
 */
export function createConnectAdapter(options: ConnectAdapterOptions): ConnectAdapter {
  const now = options.now ?? Date.now;
  const inflight = new Map<AbortController, string | undefined>();

  function startCall(method: BoundMethod, hc: HandlerContext) {
    const caller = hc.values.get(CALLER);
    const controller = new AbortController();
    inflight.set(controller, caller?.sessionId);
    const onAbort = () => controller.abort(new RpcError("CANCELLED"));
    hc.signal.addEventListener("abort", onAbort, { once: true });
    const requestId = randomUUID();
    hc.responseHeader.set("x-request-id", requestId);
    const timeout = hc.timeoutMs();
    const startedAt = now();
    const ctx: CallContext = {
      requestId,
      method: method.spec,
      // Browsers present no client certificate: identity comes only from the bearer credential.
      peer: { address: caller?.address ?? "" },
      headers: {
        get(name) {
          if (name === "authorization") return caller?.authorization;
          return hc.requestHeader.get(name) ?? undefined;
        },
      },
      deadline: timeout === undefined ? undefined : startedAt + timeout,
      signal: controller.signal,
      startedAt,
      log: options.logger.child({ requestId, method: method.spec.path, transport: "connect" }),
      notes: {},
    };
    options.observer.onStart(ctx);
    return {
      ctx,
      over() {
        if (!controller.signal.aborted) controller.abort(new RpcError("CANCELLED"));
      },
      settle(error: RpcError | undefined) {
        hc.signal.removeEventListener("abort", onAbort);
        inflight.delete(controller);
        if (error !== undefined)
          ctx.log[error.code === Code.Internal ? "error" : "debug"](
            { code: error.code, reason: error.reason, err: error.cause ?? error },
            "call failed",
          );
        options.observer.onEnd(ctx, error, now() - startedAt);
      },
    };
  }

  function pipelineFor(method: BoundMethod): Next {
    const handler = method.handler as (request: unknown, ctx: CallContext) => unknown;
    return composeStages(options.stages, async (inv) =>
      handlerResult(method.spec.kind, await handler(inv.request as never, inv.ctx)),
    );
  }

  function unary(method: BoundMethod) {
    const pipeline = pipelineFor(method);
    return async (request: unknown, hc: HandlerContext) => {
      const call = startCall(method, hc);
      try {
        const result = await pipeline({ ctx: call.ctx, request });
        if (result.kind !== "unary")
          throw new TypeError(`${call.ctx.method.path}: a stream from a unary method`);
        call.settle(undefined);
        return result.response;
      } catch (err) {
        const error = toRpcError(err);
        call.settle(error);
        throw toConnectError(error, call.ctx);
      }
    };
  }

  function serverStreaming(method: BoundMethod) {
    const pipeline = pipelineFor(method);
    return async function* (request: unknown, hc: HandlerContext) {
      const call = startCall(method, hc);
      let error: RpcError | undefined;
      try {
        const result = await pipeline({ ctx: call.ctx, request });
        if (result.kind !== "stream")
          throw new TypeError(`${call.ctx.method.path}: no stream from a streaming method`);
        for await (const item of result.responses) {
          if (call.ctx.signal.aborted) throw call.ctx.signal.reason;
          yield item;
        }
        // A handler that stops quietly on abort still ends the call with the abort's reason.
        if (call.ctx.signal.aborted) throw call.ctx.signal.reason;
      } catch (err) {
        error = toRpcError(err);
        throw toConnectError(error, call.ctx);
      } finally {
        // The stream is over either way (as in the gRPC adapter): whatever the handler
        // still awaits (a watch's next change, its timers) sees the call's signal abort.
        // Connect aborts its own context only after this, and settle() has stopped
        // listening by then.
        call.over();
        call.settle(error);
      }
    };
  }

  const router = createConnectRouter({
    readMaxBytes: options.maxRequestBytes,
    writeMaxBytes: options.maxResponseBytes,
    acceptCompression: [compressionGzip, compressionBrotli],
    grpc: false,
  });
  for (const service of options.services) {
    for (const method of service.methods) {
      const desc = method.spec.desc as DescMethod;
      if (method.spec.kind === "unary") router.rpc(desc, unary(method) as never);
      else if (method.spec.kind === "server_streaming")
        router.rpc(desc, serverStreaming(method) as never);
    }
  }
  const paths = new Map<string, UniversalHandler>();
  for (const h of router.handlers) paths.set(options.pathPrefix + h.requestPath, h);

  // As connect-node's connectNodeAdapter, with Connect's own refusals answered by the catalogue.
  const handle: NodeHandler = (req, res) => {
    const h = paths.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (h === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    const uReq = universalRequestFromNodeRequest(
      req as never,
      res as never,
      undefined,
      createContextValues().set(CALLER, options.caller(req as never)),
    );
    h(uReq)
      .then((uRes) => answeredByCatalogue(h, uRes, options.logger))
      .then((uRes) => universalResponseToNodeResponse(uRes, res as never))
      .catch((err: unknown) => {
        if (ConnectError.from(err).code !== ConnectCode.Aborted)
          options.logger.error({ err, method: h.requestPath }, "panel call could not be answered");
      });
  };

  return {
    handle,
    inFlight: () => inflight.size,
    abortAll(reason) {
      for (const c of inflight.keys())
        c.abort(new RpcError("SHUTTING_DOWN", { cause: new Error(reason) }));
    },
    endSession(sessionId) {
      for (const [c, sid] of inflight)
        if (sid === sessionId)
          c.abort(new RpcError("UNAUTHENTICATED", { cause: new Error("panel session ended") }));
    },
  };
}

/** The error a browser sees: the catalogue's code, reason and message, never the cause. */
function toConnectError(error: RpcError, ctx: CallContext): ConnectError {
  const metadata = new Headers({
    "x-request-id": ctx.requestId,
    "debvisor-error-reason": error.reason,
  });
  if (error.retryAfterMs !== undefined) metadata.set("retry-after-ms", String(error.retryAfterMs));
  const message =
    error.code === Code.Internal
      ? `internal error (request id ${ctx.requestId})`
      : error.clientMessage;
  const details =
    error.fieldViolations !== undefined && error.fieldViolations.length > 0
      ? [{ desc: BadRequestSchema, value: { fieldViolations: [...error.fieldViolations] } }]
      : [];
  return new ConnectError(message, error.code as number as ConnectCode, metadata, details);
}

/** Largest refusal of Connect's own that is read to be answered anew. */
const MAX_REFUSAL_BYTES = 64 * 1024;

/**
 * A response Connect made itself, before the pipeline ran (no request id):
 * a request it could not decode, whose message is the decoder's own text
 * ("cannot decode message ... from JSON: ...", or INTERNAL "parse binary:
 * premature EOF"). Answered as the gRPC adapter answers it,
 * REQUEST_MALFORMED with the catalogue's message, the decoder's text only
 * in the log; in each form Connect serves (Connect unary and streaming,
 * gRPC-Web). Other refusals (a wrong content type, a request too large)
 * pass as they are.
 */
async function answeredByCatalogue(
  h: UniversalHandler,
  res: UniversalServerResponse,
  logger: Logger,
): Promise<UniversalServerResponse> {
  const header = new Headers(res.header);
  if (header.has("x-request-id") || res.body === undefined) return res;
  const type = header.get("content-type") ?? "";
  const form = type.startsWith("application/grpc-web")
    ? "grpc-web"
    : type.startsWith("application/connect+")
      ? "stream"
      : res.status !== 200
        ? "unary"
        : undefined;
  if (form === undefined) return res;
  const bytes =
    res.body instanceof Uint8Array ? res.body : await readAllBytes(res.body, MAX_REFUSAL_BYTES);
  const fallback = new ConnectError("undecodable refusal", ConnectCode.Internal);
  const theirs = header.has("content-encoding")
    ? fallback
    : form === "unary"
      ? errorFromJsonBytes(bytes, undefined, fallback)
      : form === "stream"
        ? errorFromJsonBytes(lastEnvelope(bytes), undefined, fallback)
        : (findTrailerError(trailerParse(lastEnvelope(bytes))) ?? fallback);
  if (theirs.code !== ConnectCode.InvalidArgument && theirs.code !== ConnectCode.Internal)
    return { ...res, body: createAsyncIterable([bytes]) };
  const error = new RpcError("REQUEST_MALFORMED", { cause: theirs });
  const requestId = randomUUID();
  logger.debug(
    { requestId, method: h.requestPath, transport: "connect", reason: error.reason, err: theirs },
    "call failed",
  );
  const ours = new ConnectError(error.clientMessage, error.code as number as ConnectCode);
  const meta = { "x-request-id": requestId, "debvisor-error-reason": error.reason };
  header.delete("content-encoding");
  if (form === "grpc-web") {
    const trailer = new Headers(meta);
    setTrailerStatus(trailer, ours);
    const body = encodeEnvelope(trailerFlag, trailerSerialize(trailer));
    return { status: 200, header, body: createAsyncIterable([body]) };
  }
  if (form === "stream") {
    const end = createEndStreamSerialization(undefined).serialize({
      metadata: new Headers(meta),
      error: ours,
    });
    return { status: 200, header, body: createAsyncIterable([encodeEnvelope(endStreamFlag, end)]) };
  }
  const body = errorToJsonBytes(ours, undefined);
  for (const [k, v] of Object.entries(meta)) header.set(k, v);
  header.set("content-length", String(body.byteLength));
  return { status: codeToHttpStatus(ours.code), header, body: createAsyncIterable([body]) };
}

/** The payload of the last envelope (5-byte prefix: flags, big-endian length) in `bytes`. */
function lastEnvelope(bytes: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let last: Uint8Array = new Uint8Array(0);
  for (let at = 0; at + 5 <= bytes.byteLength; ) {
    const end = at + 5 + view.getUint32(at + 1);
    last = bytes.subarray(at + 5, end);
    at = end;
  }
  return last;
}
