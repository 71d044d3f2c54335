import type { Logger } from "./logger.js";

type Level = "debug" | "info" | "warn" | "error";

/**
 * A logger for lines that can repeat at the rate of the traffic (one per
 * heartbeat of thousands of agents while the store is slow): each message
 * is written at most once per `intervalMs`, the first at once; how many
 * were left out is written with the next one (`repeated`), or on its own
 * line at the end of the interval. Under overload, formatting and writing
 * an error with its stack per heartbeat cost the event loop more than the
 * heartbeat itself, and a journal that falls behind blocks the writer.
 * Messages are the code's constant strings: one entry per message.
 */
export function repeatLimitedLogger(
  log: Logger,
  intervalMs: number,
  now: () => number = Date.now,
): Logger {
  const last = new Map<string, { at: number; left: number; level: Level }>();
  const flush = (msg: string) => {
    const seen = last.get(msg);
    if (seen === undefined || seen.left === 0) {
      last.delete(msg);
      return;
    }
    log[seen.level]({ repeated: seen.left, withinMs: intervalMs }, `${msg} (repeated)`);
    last.set(msg, { at: now(), left: 0, level: seen.level });
    later(msg);
  };
  const later = (msg: string) => setTimeout(() => flush(msg), intervalMs).unref();
  const write =
    (level: Level) =>
    (obj: object, msg = "") => {
      const seen = last.get(msg);
      if (seen !== undefined && now() - seen.at < intervalMs) {
        seen.left++;
        return;
      }
      const left = seen?.left ?? 0;
      log[level](left > 0 ? { ...obj, repeated: left } : obj, msg);
      last.set(msg, { at: now(), left: 0, level });
      if (seen === undefined) later(msg);
    };
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (bindings) => repeatLimitedLogger(log.child(bindings), intervalMs, now),
  };
}
