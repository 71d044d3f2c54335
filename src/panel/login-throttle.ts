import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Clock } from "../core/index.js";
import { type BucketLimit, createRateLimiter, sourceGroupOf } from "../security/index.js";

/** Options of {@link createLoginThrottle}. */
export interface LoginThrottleOptions {
  readonly clock: Clock;
  /**
   * Sign-in attempts per source (default 10 at once, then one per 6 s): an
   * IPv4 address, or an IPv6 address's whole /64 ({@link sourceGroupOf}).
   */
  readonly perAddress?: BucketLimit;
  /** Attempts at one account from browsers it does not know (default 5 at once, then one per minute). */
  readonly perAccount?: BucketLimit;
}

/** What the throttle says about an attempt. */
export type ThrottleVerdict =
  | { allowed: true }
  | { allowed: false; retryAfterMs: number; scope: "address" | "account" };

/** Rate limits for sign-in that slow guessing without locking the right password out. */
export interface LoginThrottle {
  /**
   * Before checking the password. `address` is the client's (no port); it is
   * counted with its source group. `deviceToken` is the browser's device cookie, if any.
   */
  check(address: string, account: string, deviceToken: string | undefined): ThrottleVerdict;
  /** After a right password: a device token marking this browser as known for the account. */
  deviceTokenFor(account: string): string;
  /**
   * A sign-in attempt that names no account yet (an OpenID Connect start or
   * callback): spends from its source group's bucket only, the one password
   * attempts spend from.
   */
  checkAddress(address: string): ThrottleVerdict;
}

/**
 * Every attempt spends from its source's bucket (one IPv4 address, one IPv6
 * /64: a host rotating through its /64 is still one source), and, from a browser the
 * account does not know, from the account's bucket too. A browser that signed in to the account before holds a
 * device token (OWASP's "device cookie") and is never held back by the
 * account's bucket, so a guesser spraying one account from many addresses
 * cannot lock its owner out.
 */
export function createLoginThrottle(options: LoginThrottleOptions): LoginThrottle {
  const perAddress = options.perAddress ?? { ratePerSecond: 1 / 6, burst: 10 };
  const perAccount = options.perAccount ?? { ratePerSecond: 1 / 60, burst: 5 };
  const addresses = createRateLimiter(options.clock, 100_000);
  const accounts = createRateLimiter(options.clock, 100_000);
  // The one place a sign-in's source is turned into its bucket's key.
  const fromSource = (address: string) => addresses.take(sourceGroupOf(address), 1, perAddress);
  const secret = randomBytes(32);
  const mac = (account: string) => createHmac("sha256", secret).update(account).digest("base64url");
  const known = (account: string, token: string | undefined) => {
    if (token === undefined) return false;
    const want = Buffer.from(mac(account));
    const got = Buffer.from(token);
    return got.length === want.length && timingSafeEqual(got, want);
  };
  return {
    check(address, account, deviceToken) {
      const a = fromSource(address);
      if (!a.allowed) return { allowed: false, retryAfterMs: a.retryAfterMs, scope: "address" };
      if (known(account, deviceToken)) return { allowed: true };
      const b = accounts.take(account, 1, perAccount);
      if (!b.allowed) return { allowed: false, retryAfterMs: b.retryAfterMs, scope: "account" };
      return { allowed: true };
    },
    deviceTokenFor: mac,
    checkAddress(address) {
      const a = fromSource(address);
      return a.allowed
        ? { allowed: true }
        : { allowed: false, retryAfterMs: a.retryAfterMs, scope: "address" };
    },
  };
}
