import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock } from "../core/index.js";
import { createRateLimiter } from "./rate-limiter.js";

const limit = { ratePerSecond: 10, burst: 20 };

describe("rate limiter", () => {
  it("allows a burst, then refuses with the time until enough tokens return", () => {
    const clock = createManualClock(0);
    const rl = createRateLimiter(clock);
    for (let i = 0; i < 20; i++) assert.equal(rl.take("a", 1, limit).allowed, true);
    const refused = rl.take("a", 1, limit);
    assert.equal(refused.allowed, false);
    assert.equal(refused.retryAfterMs, 100);
    clock.advance(100);
    assert.equal(rl.take("a", 1, limit).allowed, true);
  });

  it("charges costly calls more", () => {
    const rl = createRateLimiter(createManualClock(0));
    assert.equal(rl.take("a", 15, limit).allowed, true);
    const r = rl.take("a", 10, limit);
    assert.equal(r.allowed, false);
    assert.equal(r.retryAfterMs, 500);
  });

  it("keeps one caller's exhaustion from touching another's bucket", () => {
    const rl = createRateLimiter(createManualClock(0));
    while (rl.take("noisy", 1, limit).allowed) {}
    assert.equal(rl.take("quiet", 1, limit).allowed, true);
  });

  it("stays within its bound under 150,000 distinct bogus identities", () => {
    const rl = createRateLimiter(createManualClock(0), 100_000);
    for (let i = 0; i < 150_000; i++) rl.take(`bogus-${i}`, 1, limit);
    assert.equal(rl.size(), 100_000);
    const before = process.memoryUsage().heapUsed;
    for (let i = 150_000; i < 250_000; i++) rl.take(`bogus-${i}`, 1, limit);
    assert.equal(rl.size(), 100_000);
    assert.ok(
      process.memoryUsage().heapUsed - before < 64 * 1024 * 1024,
      "no growth beyond the bound",
    );
  });
});
