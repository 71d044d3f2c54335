import { setTimeout as wait } from "node:timers/promises";
import { rethrowAborted } from "../core/index.js";

/**
 * Waits `ms` of real time (`node:timers/promises`); rejects as soon as
 * `signal` aborts, with core's one abort-to-error mapping (`abortError`: the
 * signal's RpcError reason, else CANCELLED).
 */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return wait(ms, undefined, { signal }).catch(rethrowAborted(signal));
}
