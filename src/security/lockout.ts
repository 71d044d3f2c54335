import { type Clock, createRecencyMap } from "../core/index.js";

/** Options of {@link createLockout}. */
export interface LockoutOptions {
  readonly clock: Clock;
  /** Failures of one credential within the window that lock it (default 5). */
  readonly maxFailures?: number;
  /** The window, and the cool-down once locked (default 5 minutes each). */
  readonly windowMs?: number;
  /** Failures from one address within the window before its failures are slowed down (default 20). */
  readonly sourceMaxFailures?: number;
  /** How long a failed attempt from a throttled address waits before it is answered (default 1 s). */
  readonly throttleDelayMs?: number;
  /** Credentials and addresses tracked at most, each; the least recently seen are forgotten first (default 100,000). */
  readonly maxEntries?: number;
}

/** What one recorded failure means for the call that failed. */
export interface FailureOutcome {
  /** Set when this failure locked the credential: until when. */
  readonly lockedUntil?: number;
  /** How long to hold the failed answer (0 unless the address is throttled). */
  readonly delayMs: number;
}

/**
 * Counts authentication failures per presented credential (an API key id, a
 * JWT's issuer and subject) and per source address. A credential guessed too
 * often is locked for the cool-down; an address that fails too often is only
 * slowed down (its failed attempts wait before they are answered), so a flood
 * of bad credentials from a shared address never refuses a good credential.
 */
export interface Lockout {
  /** When `credential` is locked: the time the lock ends; else undefined. */
  lockedUntil(credential: string): number | undefined;
  /** Records a failure from `source`, charged to `credential` when one was presented. */
  recordFailure(source: string, credential: string | undefined): FailureOutcome;
}

interface Entry {
  failures: number[];
  lockedUntil: number;
}

/** Creates a lockout tracker with bounded memory: entries expire, and each map holds at most `maxEntries`. */
export function createLockout(options: LockoutOptions): Lockout {
  const max = options.maxFailures ?? 5;
  const windowMs = options.windowMs ?? 300_000;
  const sourceMax = options.sourceMaxFailures ?? 20;
  const delayMs = options.throttleDelayMs ?? 1000;
  const maxEntries = options.maxEntries ?? 100_000;
  const credentials = boundedCounter(maxEntries, windowMs);
  const sources = boundedCounter(maxEntries, windowMs);
  return {
    lockedUntil(credential) {
      const until = credentials.peek(credential)?.lockedUntil ?? 0;
      return until > options.clock.now() ? until : undefined;
    },
    recordFailure(source, credential) {
      const now = options.clock.now();
      const fromSource = sources.count(source, now);
      let lockedUntil: number | undefined;
      if (credential !== undefined) {
        const entry = credentials.touch(credential, now);
        if (entry.failures.length >= max && entry.lockedUntil <= now) {
          entry.lockedUntil = now + windowMs;
          lockedUntil = entry.lockedUntil;
        }
      }
      return { lockedUntil, delayMs: fromSource > sourceMax ? delayMs : 0 };
    },
  };
}

/** A map of failure times per key, least recently touched first, with stale entries dropped. */
function boundedCounter(maxEntries: number, windowMs: number) {
  const entries = createRecencyMap<string, Entry>();
  const prune = (now: number) => {
    // Oldest first: stop at the first entry still live.
    for (let first = entries.oldest(); first !== undefined; first = entries.oldest()) {
      const e = first[1];
      const last = e.failures[e.failures.length - 1] ?? 0;
      if (last > now - windowMs || e.lockedUntil > now) break;
      entries.dropOldest();
    }
  };
  const touch = (key: string, now: number): Entry => {
    prune(now);
    const entry = entries.get(key) ?? { failures: [], lockedUntil: 0 };
    entries.touch(key, entry);
    if (entries.size > maxEntries) entries.dropOldest();
    entry.failures = entry.failures.filter((t) => t > now - windowMs);
    entry.failures.push(now);
    // Keep no more times than a decision needs.
    if (entry.failures.length > 1000) entry.failures.splice(0, entry.failures.length - 1000);
    return entry;
  };
  return {
    peek: (key: string) => entries.get(key),
    touch,
    count: (key: string, now: number) => touch(key, now).failures.length,
  };
}
