import { RpcError } from "./rpc-error.js";

/**
 * The one abort-to-error mapping: work cut short by `signal` rejects with the
 * signal's reason when that is an RpcError (a call's DEADLINE_EXCEEDED, the
 * daemon's SHUTTING_DOWN), else with CANCELLED.
 */
export function abortError(signal: AbortSignal | undefined): RpcError {
  return signal?.reason instanceof RpcError ? signal.reason : new RpcError("CANCELLED");
}

/** Throws {@link abortError} when `signal` is already aborted: what every driver and store call does first. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * A rejection handler for waits on `signal` (`node:timers/promises`' setTimeout
 * with `{ signal }`, `events.once`): an abort becomes {@link abortError}; any
 * other error is rethrown as it is.
 */
export function rethrowAborted(signal: AbortSignal | undefined): (err: unknown) => never {
  return (err) => {
    if (signal?.aborted) throw abortError(signal);
    throw err;
  };
}
