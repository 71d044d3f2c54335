import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock, type Invocation, RpcError } from "../core/index.js";
import { createRateLimitStages } from "./rate-limit-stages.js";

/** A call from `address` (as gRPC gives it: host and port) to a method that is not public. */
const call = (address: string) =>
  ({ ctx: { method: { access: "authenticated" }, peer: { address } } }) as unknown as Invocation;

describe("per-source rate limit", () => {
  it("counts an IPv6 source by its /64 and an IPv4-mapped one as its IPv4 address", async () => {
    const { perSource } = createRateLimitStages({
      clock: createManualClock(0),
      perSource: { ratePerSecond: 0.001, burst: 3 },
      perPrincipal: { ratePerSecond: 1, burst: 1 },
      perRole: {},
      methodCost: {},
      policy: () => ({}) as never,
    });
    const pass = async (address: string) => {
      try {
        await perSource(call(address), async () => ({}) as never);
        return "ok";
      } catch (err) {
        return err instanceof RpcError ? (err.reason ?? "") : "error";
      }
    };
    // Four addresses of one /64: the fourth call is over the burst of 3.
    const one64 = ["[2001:db8:1:2::1]:5000", "[2001:db8:1:2::2]:5001", "[2001:db8:1:2:ffff::9]:1"];
    for (const a of one64) assert.equal(await pass(a), "ok");
    assert.equal(await pass("[2001:db8:1:2:abcd::7]:2"), "RATE_LIMITED");
    // The next /64 has its own bucket.
    assert.equal(await pass("[2001:db8:1:3::1]:5000"), "ok");
    // 192.0.2.7 and ::ffff:192.0.2.7 are one source.
    for (const a of ["192.0.2.7:1", "[::ffff:192.0.2.7]:2", "192.0.2.7:3"])
      assert.equal(await pass(a), "ok");
    assert.equal(await pass("[::ffff:192.0.2.7]:4"), "RATE_LIMITED");
  });
});
