import { Transform } from "node:stream";

/** Options of {@link createThrottle}. */
export interface ThrottleOptions {
  /** Bytes per second; undefined or 0 passes data through at full speed. */
  readonly bytesPerSecond?: number;
  /** Called with the running total after each chunk passes. */
  readonly onBytes?: (total: number) => void;
  /** Monotonic milliseconds (default performance.now). */
  readonly now?: () => number;
}

/**
 * A pass-through stream that counts bytes and, with a limit, holds each
 * chunk back until the average rate since the first byte is within it.
 * Backpressure does the rest: the writer (zfs send) waits while we wait.
 */
export function createThrottle(options: ThrottleOptions): Transform {
  const now = options.now ?? (() => performance.now());
  const rate = options.bytesPerSecond ?? 0;
  let total = 0;
  let started: number | undefined;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      started ??= now();
      total += chunk.length;
      options.onBytes?.(total);
      if (rate <= 0) {
        callback(null, chunk);
        return;
      }
      const due = started + (total / rate) * 1000;
      const wait = due - now();
      if (wait <= 0) callback(null, chunk);
      else setTimeout(() => callback(null, chunk), wait);
    },
  });
}
