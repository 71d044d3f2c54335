import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock } from "../core/index.js";
import { createLoginThrottle } from "./login-throttle.js";

describe("createLoginThrottle", () => {
  const limits = {
    perAddress: { ratePerSecond: 1 / 6, burst: 4 },
    perAccount: { ratePerSecond: 1 / 60, burst: 3 },
  };

  it("refuses an address after its burst, until tokens come back", () => {
    const clock = createManualClock(0);
    const t = createLoginThrottle({ clock, ...limits });
    for (let i = 0; i < 4; i++) assert.equal(t.check("10.0.0.1", `u${i}`, undefined).allowed, true);
    const refused = t.check("10.0.0.1", "u9", undefined);
    assert.deepEqual(refused, { allowed: false, retryAfterMs: 6000, scope: "address" });
    assert.equal(
      t.check("10.0.0.2", "u9", undefined).allowed,
      true,
      "another address is not held back",
    );
    clock.advance(6000);
    assert.equal(t.check("10.0.0.1", "u9", undefined).allowed, true);
  });

  it("holds an account back from unknown browsers, spread over many addresses", () => {
    const t = createLoginThrottle({ clock: createManualClock(0), ...limits });
    for (let i = 0; i < 3; i++)
      assert.equal(t.check(`10.0.1.${i}`, "carol", undefined).allowed, true);
    const refused = t.check("10.0.1.99", "carol", undefined);
    assert.equal(refused.allowed, false);
    assert.equal(!refused.allowed && refused.scope, "account");
  });

  it("never locks the account's own browser out: its device token passes the account limit", () => {
    const t = createLoginThrottle({ clock: createManualClock(0), ...limits });
    const device = t.deviceTokenFor("carol");
    for (let i = 0; i < 10; i++) t.check(`10.0.2.${i}`, "carol", undefined);
    assert.equal(t.check("10.0.3.1", "carol", device).allowed, true);
    assert.equal(
      t.check("10.0.3.2", "carol", t.deviceTokenFor("mallory")).allowed,
      false,
      "another account's token does not count",
    );
    assert.equal(
      t.check("10.0.3.3", "carol", `${device}x`).allowed,
      false,
      "a forged token does not count",
    );
  });

  it("counts a whole IPv6 /64 as one source: rotating addresses in it gains nothing", () => {
    const clock = createManualClock(0);
    const t = createLoginThrottle({ clock, ...limits });
    // Four attempts from four addresses of one /64 (written every way), password and OIDC alike.
    assert.equal(t.check("2001:db8:7:1::1", "u1", undefined).allowed, true);
    assert.equal(t.checkAddress("2001:db8:7:1:ffff:ffff:ffff:fffe").allowed, true);
    assert.equal(t.check("2001:0DB8:0007:0001:0:0:0:3", "u3", undefined).allowed, true);
    assert.equal(t.checkAddress("2001:db8:7:1:8000::4").allowed, true);
    assert.deepEqual(t.check("2001:db8:7:1::5", "u5", undefined), {
      allowed: false,
      retryAfterMs: 6000,
      scope: "address",
    });
    assert.equal(t.checkAddress("2001:db8:7:1:1234::99").allowed, false);
    // The next /64 over, and the one before, have buckets of their own.
    assert.equal(t.check("2001:db8:7:2::1", "u6", undefined).allowed, true);
    assert.equal(t.checkAddress("2001:db8:7:0:ffff::1").allowed, true);
    clock.advance(6000);
    assert.equal(t.checkAddress("2001:db8:7:1::77").allowed, true, "the /64's bucket refills");
  });

  it("counts an IPv4-mapped IPv6 address as its IPv4 address", () => {
    const t = createLoginThrottle({ clock: createManualClock(0), ...limits });
    assert.equal(t.check("192.0.2.9", "u1", undefined).allowed, true);
    assert.equal(t.check("::ffff:192.0.2.9", "u2", undefined).allowed, true);
    assert.equal(t.checkAddress("::ffff:c000:209").allowed, true);
    assert.equal(t.checkAddress("192.0.2.9").allowed, true);
    assert.equal(t.checkAddress("::ffff:192.0.2.9").allowed, false, "one bucket for both forms");
    assert.equal(t.checkAddress("::ffff:192.0.2.10").allowed, true, "another IPv4 address");
  });
});
