import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code as ConnectCode,
  ConnectError,
  createConnectRouter,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
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
  composeStages,
  handlerResult,
  type Logger,
  type Next,
  RpcError,
  type ServiceBinding,
  type Stage,
  toRpcError,
} from "../core/index.js";
import { CALLER, type ConnectCaller, startConnectCall } from "./connect-call.js";
import { answeredByCatalogue, toConnectError } from "./connect-errors.js";

export type { ConnectCaller } from "./connect-call.js";

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
  const deps = { inflight, now, observer: options.observer, logger: options.logger };

  function pipelineFor(method: BoundMethod): Next {
    const handler = method.handler as (request: unknown, ctx: CallContext) => unknown;
    return composeStages(options.stages, async (inv) =>
      handlerResult(method.spec.kind, await handler(inv.request as never, inv.ctx)),
    );
  }

  function unary(method: BoundMethod) {
    const pipeline = pipelineFor(method);
    return async (request: unknown, hc: HandlerContext) => {
      const call = startConnectCall(deps, method, hc);
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
      const call = startConnectCall(deps, method, hc);
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
