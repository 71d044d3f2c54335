import type { CallContext } from "./call-context.js";
import type { RpcError } from "./rpc-error.js";

/**
 * Watches every call an adapter serves, whatever the outcome, including calls
 * refused before any stage ran (malformed requests). Metrics and access logs
 * hang here so a second adapter gets them by calling the same hooks.
 */
export interface CallObserver {
  onStart(ctx: CallContext): void;
  /** `error` is undefined on success. */
  onEnd(ctx: CallContext, error: RpcError | undefined, durationMs: number): void;
  /** One message of the call crossed the wire: decoded from the client, or encoded for it. */
  onMessage?(ctx: CallContext, direction: "received" | "sent"): void;
}
