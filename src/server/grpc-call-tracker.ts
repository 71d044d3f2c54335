// The calls in flight of the gRPC adapter: each call's context (request id,
// peer, deadline, cancellation) when it starts, its log line and observer
// report when it ends, and waiting for or aborting every call at shutdown.

import { randomUUID } from "node:crypto";
import {
  type BoundMethod,
  type CallContext,
  type CallObserver,
  Code,
  type Logger,
  RpcError,
} from "../core/index.js";
import { type AnyCall, verifiedCertificate } from "./grpc-peer-certificate.js";

/** What {@link createGrpcCallTracker} needs. */
export interface GrpcCallTrackerDeps {
  readonly observer: CallObserver;
  readonly logger: Logger;
  readonly now: () => number;
}

/** A call just started: its context, its signal's controller and what to run when it is over. */
export interface StartedCall {
  readonly ctx: CallContext;
  readonly controller: AbortController;
  /** Clears its deadline timer and cancel listener and counts it out of the calls in flight. */
  readonly done: () => void;
}

/** The calls in flight; see {@link createGrpcCallTracker}. */
export interface GrpcCallTracker {
  /** Starts a call: builds its context and reports it to the observer. */
  start(call: AnyCall, method: BoundMethod): StartedCall;
  /** Ends a call: logs its failure, if any, and reports it to the observer. */
  settle(ctx: CallContext, error: RpcError | undefined): void;
  /** Calls started and not yet done. */
  inFlight(): number;
  /** Resolves when no call is in flight. */
  idle(): Promise<void>;
  /** Aborts the signal of every call in flight (hard stop). */
  abortAll(reason: string): void;
}

/** Creates the tracker of the adapter's calls. */
export function createGrpcCallTracker(deps: GrpcCallTrackerDeps): GrpcCallTracker {
  const { observer, logger, now } = deps;
  const inflight = new Set<AbortController>();
  let idleWaiters: (() => void)[] = [];

  function finish(controller: AbortController): void {
    inflight.delete(controller);
    if (inflight.size === 0 && idleWaiters.length > 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  function start(call: AnyCall, method: BoundMethod): StartedCall {
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
      log: logger.child({ requestId, method: method.spec.path }),
      notes: {},
    };
    observer.onStart(ctx);
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
    observer.onEnd(ctx, error, now() - ctx.startedAt);
  }

  return {
    start,
    settle,
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
