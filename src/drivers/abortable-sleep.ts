import { RpcError } from "../core/index.js";

/** Rejects with CANCELLED when `signal` is already aborted: what every driver call does first. */
export function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw new RpcError("CANCELLED");
}

/** Waits `ms` of real time; rejects with CANCELLED as soon as `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new RpcError("CANCELLED"));
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new RpcError("CANCELLED"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
