/**
 * The one compare-and-swap retry loop: read, plan, write in one transaction
 * comparing what was read, and do it all again while the transaction loses
 * to another writer, a bounded number of times. No backoff here: an attempt
 * that wants to wait before the next one waits before answering LOST.
 */
import { RpcError } from "../core/index.js";

/** One attempt's outcome when its transaction lost to another writer: try again. */
export const LOST: unique symbol = Symbol("LOST");

/** What {@link retryWhileLost} ends with by default: CONFLICT. */
function conflict(): never {
  throw new RpcError("CONFLICT");
}

/**
 * Runs `attempt` (given its 0-based number) up to `attempts` times, until it
 * answers anything but {@link LOST}, and resolves with that. After `attempts`
 * LOST answers it resolves with what `exhausted` returns, or rejects with
 * what it throws (default: CONFLICT). An attempt that throws ends it at once.
 */
export async function retryWhileLost<T>(
  attempts: number,
  attempt: (n: number) => Promise<T | typeof LOST>,
  exhausted: () => NoInfer<T> = conflict,
): Promise<T> {
  for (let n = 0; n < attempts; n++) {
    const out = await attempt(n);
    if (out !== LOST) return out;
  }
  return exhausted();
}
