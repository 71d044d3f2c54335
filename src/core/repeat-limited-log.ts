import type { Logger } from "./logger.js";

type Level = "debug" | "info" | "warn" | "error";

/** Distinct values of the collected field written with a count of lines left out, at most. */
const MAX_COLLECTED = 20;
/** Characters of one collected value kept, at most. */
const MAX_VALUE_LENGTH = 256;

/** Options of {@link repeatLimitedLogger}. */
export interface RepeatLimits {
  /** Each message is written at most once per this many milliseconds. */
  readonly intervalMs: number;
  readonly now?: () => number;
  /**
   * A field of the lines (e.g. `node`) whose distinct values among the
   * lines left out are written with their count, as `repeatedFor` (at most
   * 20, of at most 256 characters each; `repeatedForTruncated` when there
   * were more): one node's warning
   * must not hide that another node had the same trouble.
   */
  readonly collect?: string;
}

/** What was left out of one message since it was last written. */
interface Held {
  at: number;
  left: number;
  level: Level;
  values: Set<string>;
  truncated: boolean;
}

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
export function repeatLimitedLogger(log: Logger, limits: RepeatLimits): Logger {
  const { intervalMs, collect } = limits;
  const now = limits.now ?? Date.now;
  const last = new Map<string, Held>();
  const fresh = (level: Level): Held => ({
    at: now(),
    left: 0,
    level,
    values: new Set(),
    truncated: false,
  });
  /** The fields telling what was left out of `held`. */
  const told = (held: Held): Record<string, unknown> => {
    if (held.left === 0) return {};
    const out: Record<string, unknown> = { repeated: held.left };
    if (held.values.size > 0) out.repeatedFor = [...held.values];
    if (held.truncated) out.repeatedForTruncated = true;
    return out;
  };
  const flush = (msg: string) => {
    const seen = last.get(msg);
    if (seen === undefined || seen.left === 0) {
      last.delete(msg);
      return;
    }
    log[seen.level]({ ...told(seen), withinMs: intervalMs }, `${msg} (repeated)`);
    last.set(msg, fresh(seen.level));
    later(msg);
  };
  const later = (msg: string) => setTimeout(() => flush(msg), intervalMs).unref();
  /** Notes a line left out. */
  const hold = (seen: Held, obj: object) => {
    seen.left++;
    if (collect === undefined) return;
    const field = (obj as Record<string, unknown>)[collect];
    if (typeof field !== "string") return;
    const value = field.length > MAX_VALUE_LENGTH ? field.slice(0, MAX_VALUE_LENGTH) : field;
    if (seen.values.has(value)) return;
    if (seen.values.size < MAX_COLLECTED) seen.values.add(value);
    else seen.truncated = true;
  };
  const write =
    (level: Level) =>
    (obj: object, msg = "") => {
      const seen = last.get(msg);
      if (seen !== undefined && now() - seen.at < intervalMs) {
        hold(seen, obj);
        return;
      }
      const extra = seen === undefined ? {} : told(seen);
      log[level](Object.keys(extra).length > 0 ? { ...obj, ...extra } : obj, msg);
      last.set(msg, fresh(level));
      if (seen === undefined) later(msg);
    };
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (bindings) => repeatLimitedLogger(log.child(bindings), limits),
  };
}
