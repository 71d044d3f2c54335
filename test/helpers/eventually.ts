import { setTimeout as sleep } from "node:timers/promises";

/** Options of {@link eventually}. */
export interface EventuallyOptions {
  /** Give up after this long (default 10 s). */
  readonly timeoutMs?: number;
  /** Pause between tries (default 50 ms). */
  readonly intervalMs?: number;
}

/**
 * The one way tests wait for something: runs `check` until it neither throws
 * nor returns `false`, and resolves with what it returned. After `timeoutMs`
 * it rejects with the last assertion error (or says the check stayed false),
 * so a failure reads like the assertion that never came true. Use it instead
 * of fixed sleeps: it is as fast as the system allows and patient when the
 * machine is loaded.
 */
export async function eventually<T>(
  check: () => T | Promise<T>,
  options: EventuallyOptions = {},
): Promise<Exclude<T, false>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const result = await check();
      if (result !== false) return result as Exclude<T, false>;
      last = new Error(`condition still false after ${timeoutMs} ms`);
    } catch (err) {
      last = err;
    }
    if (Date.now() >= until) throw last;
    await sleep(intervalMs);
  }
}

/**
 * Waits up to `timeoutMs` for `cond` to hold and resolves whether it did,
 * for a test that goes on either way (and asserts what it expects after).
 */
export function within(timeoutMs: number, cond: () => boolean): Promise<boolean> {
  return eventually(cond, { timeoutMs }).then(
    () => true,
    () => false,
  );
}
