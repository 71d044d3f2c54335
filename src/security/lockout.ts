import type { Clock } from "../core/index.js";

/** Options of {@link createLockout}. */
export interface LockoutOptions {
  readonly clock: Clock;
  /** Failures within the window that lock a source out (default 5). */
  readonly maxFailures?: number;
  /** The window, and the cool-down once locked (default 5 minutes each). */
  readonly windowMs?: number;
  /** Sources tracked at most; the least recently seen are forgotten first (default 100,000). */
  readonly maxSources?: number;
}

/** Counts authentication failures per source address and locks repeat offenders out for a while. */
export interface Lockout {
  isLocked(source: string): boolean;
  /** Records a failure; true when this failure locked the source. */
  recordFailure(source: string): boolean;
}

/** Creates a lockout tracker with bounded memory. */
export function createLockout(options: LockoutOptions): Lockout {
  const max = options.maxFailures ?? 5;
  const windowMs = options.windowMs ?? 300_000;
  const maxSources = options.maxSources ?? 100_000;
  const sources = new Map<string, { failures: number[]; lockedUntil: number }>();
  const touch = (source: string) => {
    let entry = sources.get(source);
    if (entry !== undefined) sources.delete(source);
    else entry = { failures: [], lockedUntil: 0 };
    sources.set(source, entry);
    if (sources.size > maxSources) sources.delete(sources.keys().next().value as string);
    return entry;
  };
  return {
    isLocked(source) {
      const entry = sources.get(source);
      return entry !== undefined && entry.lockedUntil > options.clock.now();
    },
    recordFailure(source) {
      const now = options.clock.now();
      const entry = touch(source);
      entry.failures = entry.failures.filter((t) => t > now - windowMs);
      entry.failures.push(now);
      if (entry.failures.length > max) entry.failures.splice(0, entry.failures.length - max);
      if (entry.failures.length >= max && entry.lockedUntil <= now) {
        entry.lockedUntil = now + windowMs;
        return true;
      }
      return false;
    },
  };
}
