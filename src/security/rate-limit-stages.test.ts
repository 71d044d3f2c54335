import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock, type Invocation, type Principal, RpcError } from "../core/index.js";
import { createAccessPolicy } from "./access-evaluator.js";
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

describe("per-role rate limits", () => {
  it("fail-a role held only in a tenant (a tenant admin's to give) leaves the per-principal limit", async () => {
    // The operator gave role ci a generous limit for cluster-wide CI accounts.
    const policy = createAccessPolicy({
      roles: [{ name: "ci", grants: ["vm:read"] }],
      bindings: [
        { principal: "builder", roles: ["ci"] },
        // acme's admin binds its own user to ci in acme: that must not buy a bigger budget.
        { principal: "acme-user", roles: ["ci"], tenant: "acme" },
      ],
    });
    const { perPrincipal } = createRateLimitStages({
      clock: createManualClock(0),
      perSource: { ratePerSecond: 1000, burst: 1000 },
      perPrincipal: { ratePerSecond: 0.001, burst: 2 },
      perRole: { ci: { ratePerSecond: 100, burst: 10 } },
      methodCost: {},
      policy: () => policy,
    });
    /** How many of 10 calls in one instant `principal` gets through. */
    const passed = async (principal: Principal) => {
      const ctx = { method: { access: "authenticated", path: "/x" }, peer: {}, principal };
      let n = 0;
      for (let i = 0; i < 10; i++) {
        try {
          await perPrincipal({ ctx } as unknown as Invocation, async () => ({}) as never);
          n++;
        } catch (err) {
          assert.equal(err instanceof RpcError && err.reason, "RATE_LIMITED");
        }
      }
      return n;
    };
    assert.equal(await passed({ id: "builder", method: "mtls", roles: [] }), 10);
    assert.equal(await passed({ id: "acme-user", method: "mtls", roles: [] }), 2);
    // A key a tenant admin made, confined to acme, naming ci itself: no bigger budget either.
    const key = { id: "acme-bot", method: "apikey", roles: ["ci"], tenant: "acme" } as const;
    assert.equal(await passed(key), 2);
    // An unconfined credential naming ci (a cluster admin's key) has the role's limit.
    assert.equal(await passed({ id: "ci-key", method: "apikey", roles: ["ci"] }), 10);
  });
});

describe("per-tenant rate limit", () => {
  it("holds every credential confined to a tenant to one budget: minted keys do not multiply it", async () => {
    const { perPrincipal } = createRateLimitStages({
      clock: createManualClock(0),
      perSource: { ratePerSecond: 1000, burst: 1000 },
      perPrincipal: { ratePerSecond: 0.001, burst: 10 },
      perTenant: { ratePerSecond: 0.001, burst: 25 },
      perRole: {},
      methodCost: {},
      policy: () => createAccessPolicy({ roles: [], bindings: [] }),
    });
    const passed = async (principal: Principal, calls: number) => {
      const ctx = { method: { access: "authenticated", path: "/x" }, peer: {}, principal };
      let n = 0;
      for (let i = 0; i < calls; i++)
        n += await perPrincipal({ ctx } as unknown as Invocation, async () => ({}) as never).then(
          () => 1,
          (err: unknown) => {
            assert.equal(err instanceof RpcError && err.reason, "RATE_LIMITED");
            return 0;
          },
        );
      return n;
    };
    // acme's admin minted five keys: together they get acme's 25, not 5 x 10.
    const bots = Array.from(
      { length: 5 },
      (_, i) =>
        ({ id: `acme-bot-${i}`, method: "apikey", roles: ["viewer"], tenant: "acme" }) as const,
    );
    let acme = 0;
    for (const bot of bots) acme += await passed(bot, 10);
    assert.equal(acme, 25);
    // Another tenant, and a caller confined to none, keep their own budgets.
    assert.equal(
      await passed({ id: "globex-bot", method: "apikey", roles: [], tenant: "globex" }, 10),
      10,
    );
    assert.equal(await passed({ id: "ops", method: "mtls", roles: [] }, 10), 10);
  });
});
