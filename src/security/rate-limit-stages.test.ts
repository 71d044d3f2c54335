import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock, type Invocation, type Principal, RpcError } from "../core/index.js";
import { createAccessPolicy } from "./access-evaluator.js";
import { createRateLimitStages } from "./rate-limit-stages.js";
import type { BucketLimit } from "./rate-limiter.js";

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

/** The per-principal stage with a tenant budget; `passed` counts how many of `calls` in one instant get through. */
function tenantLimited(
  perPrincipal: BucketLimit,
  perTenant: BucketLimit,
  clock = createManualClock(0),
) {
  const stages = createRateLimitStages({
    clock,
    perSource: { ratePerSecond: 1000, burst: 1000 },
    perPrincipal,
    perTenant,
    perRole: {},
    methodCost: {},
    policy: () => createAccessPolicy({ roles: [], bindings: [] }),
  });
  return async (principal: Principal, calls: number) => {
    const ctx = { method: { access: "authenticated", path: "/x" }, peer: {}, principal };
    let n = 0;
    for (let i = 0; i < calls; i++)
      n += await stages
        .perPrincipal({ ctx } as unknown as Invocation, async () => ({}) as never)
        .then(
          () => 1,
          (err: unknown) => {
            assert.equal(err instanceof RpcError && err.reason, "RATE_LIMITED");
            return 0;
          },
        );
    return n;
  };
}

/** A key confined to tenant `tenant`, as a tenant admin mints one. */
const confined = (id: string, tenant = "acme") =>
  ({ id, method: "apikey", roles: ["viewer"], tenant }) as const;

describe("per-tenant rate limit", () => {
  it("holds every credential confined to a tenant to one budget: minted keys do not multiply it", async () => {
    const passed = tenantLimited(
      { ratePerSecond: 0.001, burst: 10 },
      { ratePerSecond: 0.001, burst: 25 },
    );
    // acme's admin minted five keys: together they get acme's 25, not 5 x 10.
    let acme = 0;
    for (let i = 0; i < 5; i++) acme += await passed(confined(`acme-bot-${i}`), 10);
    assert.equal(acme, 25);
    // Another tenant, and a caller confined to none, keep their own budgets.
    assert.equal(await passed(confined("globex-bot", "globex"), 10), 10);
    assert.equal(await passed({ id: "ops", method: "mtls", roles: [] }, 10), 10);
  });

  it("spends none of a caller's own budget on calls its tenant's budget refused", async () => {
    const clock = createManualClock(0);
    const passed = tenantLimited(
      { ratePerSecond: 1, burst: 10 },
      { ratePerSecond: 10, burst: 20 },
      clock,
    );
    // Two keys drain acme's 20; a third acme caller is refused 10 times meanwhile.
    assert.equal((await passed(confined("bot-1"), 10)) + (await passed(confined("bot-2"), 10)), 20);
    assert.equal(await passed(confined("alice"), 10), 0);
    // A second on, acme has 10 again, and alice her own 10: nothing she called ran.
    clock.advance(1000);
    assert.equal(await passed(confined("alice"), 10), 10);
  });
});
