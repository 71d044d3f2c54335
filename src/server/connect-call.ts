import { randomUUID } from "node:crypto";
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import {
  type BoundMethod,
  type CallContext,
  type CallObserver,
  Code,
  type Logger,
  RpcError,
} from "../core/index.js";

/**
 * One panel call's context in the Connect adapter: its request id, deadline,
 * signal (aborted by the browser, a hard stop or the end of its sign-in
 * session) and the observer's start and end, as the gRPC adapter makes them.
 */

/** What the panel's listener knows of a request before the pipeline runs. */
export interface ConnectCaller {
  /** `host:port` of the remote socket. */
  readonly address: string;
  /** The credential to hand the authentication stage (`Bearer <token>`), if any. */
  readonly authorization: string | undefined;
  /** The sign-in session the call belongs to: its streams end when the session does. */
  readonly sessionId: string | undefined;
}

/** The listener's {@link ConnectCaller}, handed to each call through Connect's context values. */
export const CALLER = createContextKey<ConnectCaller | undefined>(undefined);

/** What {@link startConnectCall} needs of its adapter. */
export interface ConnectCallDeps {
  /** Calls in flight, each with its sign-in session. */
  readonly inflight: Map<AbortController, string | undefined>;
  readonly now: () => number;
  readonly observer: CallObserver;
  readonly logger: Logger;
}

export function startConnectCall(deps: ConnectCallDeps, method: BoundMethod, hc: HandlerContext) {
  const { inflight, now, observer, logger } = deps;
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
    log: logger.child({ requestId, method: method.spec.path, transport: "connect" }),
    notes: {},
  };
  observer.onStart(ctx);
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
      observer.onEnd(ctx, error, now() - startedAt);
    },
  };
}
