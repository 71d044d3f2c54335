// How a simulated send moves its bytes: in steps of simulated time at the
// link's speed (or the send's bandwidth limit), failing part way when an
// injected fault says so.

import { RpcError, throwIfAborted } from "../core/index.js";
import type { StorageFault } from "./simulated-storage.js";
import type { SendOptions } from "./storage-driver.js";

/** A send moves its bytes in steps of this much simulated time... */
const STEP_MS = 100;
/** ...but never in more steps than this. */
const MAX_STEPS = 1000;

/** Moves `total` bytes in simulated time, reporting progress; fails part way when a fault says so. */
export async function transfer(
  total: number,
  send: SendOptions,
  fault: StorageFault | undefined,
  rate: number,
  sleep: (ms: number, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const limit =
    send.bandwidthLimit !== undefined && send.bandwidthLimit > 0
      ? send.bandwidthLimit
      : Number.POSITIVE_INFINITY;
  const speed = Math.min(rate, limit);
  const durationMs = (total / speed) * 1000;
  const steps = Math.max(1, Math.min(MAX_STEPS, Math.ceil(durationMs / STEP_MS)));
  const failAt =
    fault === undefined ? Number.POSITIVE_INFINITY : total * (fault.afterFraction ?? 0.5);
  let moved = 0;
  for (let i = 1; i <= steps; i++) {
    throwIfAborted(send.signal);
    // Whole milliseconds that still add up to the duration.
    await sleep(
      Math.round((durationMs * i) / steps) - Math.round((durationMs * (i - 1)) / steps),
      send.signal,
    );
    moved = Math.round((total * i) / steps);
    if (moved >= failAt) {
      send.onProgress?.(Math.round(failAt), total);
      throw new RpcError("STORAGE_UNAVAILABLE", {
        message: "send interrupted: the connection to the target node was lost",
        cause: new Error("injected send fault"),
      });
    }
    send.onProgress?.(moved, total);
  }
}
