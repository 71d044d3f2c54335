import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock } from "../core/index.js";
import { createLockout } from "./lockout.js";

describe("lockout", () => {
  it("locks a credential failed too often, for the cool-down, and forgets it after", () => {
    const clock = createManualClock(1_000_000);
    const lockout = createLockout({ clock, maxFailures: 3, windowMs: 60_000 });
    assert.equal(lockout.recordFailure("10.0.0.1", "key-a").lockedUntil, undefined);
    assert.equal(lockout.recordFailure("10.0.0.2", "key-a").lockedUntil, undefined);
    assert.equal(lockout.recordFailure("10.0.0.3", "key-a").lockedUntil, 1_060_000);
    assert.equal(lockout.lockedUntil("key-a"), 1_060_000);
    assert.equal(lockout.lockedUntil("key-b"), undefined);
    clock.advance(60_000);
    assert.equal(lockout.lockedUntil("key-a"), undefined);
    // Its old failures are out of the window: one more does not lock it again.
    assert.equal(lockout.recordFailure("10.0.0.1", "key-a").lockedUntil, undefined);
  });

  it("a flood of distinct credentials forgets the least recently seen, never a recent lock", () => {
    const clock = createManualClock(1_000_000);
    const lockout = createLockout({ clock, maxFailures: 2, windowMs: 60_000, maxEntries: 1000 });
    lockout.recordFailure("10.0.0.1", "locked");
    const until = lockout.recordFailure("10.0.0.1", "locked").lockedUntil;
    assert.equal(until, 1_060_000);
    // 999 other credentials, each failed once, after the lock.
    for (let i = 0; i < 999; i++) lockout.recordFailure("10.0.0.2", `bogus-${i}`);
    assert.equal(lockout.lockedUntil("locked"), until);
    // "locked" seen again (a guess while locked) is the most recent now.
    lockout.recordFailure("10.0.0.1", "locked");
    for (let i = 999; i < 1998; i++) lockout.recordFailure("10.0.0.2", `bogus-${i}`);
    assert.equal(lockout.lockedUntil("locked"), until, "seen within the last 1000: kept");
    for (let i = 1998; i < 3000; i++) lockout.recordFailure("10.0.0.2", `bogus-${i}`);
    assert.equal(lockout.lockedUntil("locked"), undefined, "1000 others since: forgotten");
  });
});
