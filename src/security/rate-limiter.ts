import { type Clock, createRecencyMap } from "../core/index.js";

/** A token bucket's shape: refill rate and burst size. */
export interface BucketLimit {
  /** Tokens added per second. */
  readonly ratePerSecond: number;
  /** Bucket size: the most a caller can spend at once. */
  readonly burst: number;
}

/** Outcome of taking tokens. */
export interface Take {
  readonly allowed: boolean;
  /** When refused: how long until enough tokens are back. */
  readonly retryAfterMs: number;
}

/** Token buckets by key with bounded memory. */
export interface RateLimiter {
  take(key: string, cost: number, limit: BucketLimit): Take;
  /** Gives back tokens taken for a call another budget refused (at most up to the burst). */
  giveBack(key: string, cost: number, limit: BucketLimit): void;
  /** Keys currently tracked (never more than maxKeys). */
  size(): number;
}

/**
 * Creates token buckets kept in insertion/recency order; past `maxKeys`
 * (default 100,000) the least recently used bucket is dropped, so a flood of
 * distinct bogus identities costs bounded memory. A dropped key comes back
 * with a full bucket, which only ever favours a caller that was idle longest.
 */
export function createRateLimiter(clock: Clock, maxKeys = 100_000): RateLimiter {
  const buckets = createRecencyMap<string, { tokens: number; at: number }>();
  return {
    take(key, cost, limit) {
      const now = clock.now();
      let b = buckets.get(key);
      if (b === undefined) {
        b = { tokens: limit.burst, at: now };
        if (buckets.size >= maxKeys) buckets.dropOldest();
      } else {
        b.tokens = Math.min(limit.burst, b.tokens + ((now - b.at) / 1000) * limit.ratePerSecond);
        b.at = now;
      }
      buckets.touch(key, b);
      if (b.tokens >= cost) {
        b.tokens -= cost;
        return { allowed: true, retryAfterMs: 0 };
      }
      const missing = cost - b.tokens;
      return { allowed: false, retryAfterMs: Math.ceil((missing / limit.ratePerSecond) * 1000) };
    },
    giveBack(key, cost, limit) {
      const b = buckets.get(key);
      if (b !== undefined) b.tokens = Math.min(limit.burst, b.tokens + cost);
    },
    size: () => buckets.size,
  };
}
