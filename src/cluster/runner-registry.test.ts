import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { eventually } from "../../test/helpers/eventually.js";
import { RpcError, silentLogger } from "../core/index.js";
import { createSqliteStore, type KvStore, type Lease } from "../store/index.js";
import { registerRunner } from "./runner-registry.js";

const TTL_MS = 3000;

/**
 * The real SQLite store, whose keepalives of the leases in `failing` fail as
 * an unreachable etcd's do (STORE_UNAVAILABLE) without reaching the store;
 * with `answerDelayMs`, a keepalive is applied at once and answered that
 * late (a loaded etcd); with `frozen`, no call is answered at all.
 * `renewals` has every keepalive asked for, by lease, with how it ended.
 */
function storeWithFailingRenewals(store: KvStore) {
  const failing = new Set<string>();
  const ctl = { answerDelayMs: 0, frozen: false, putDelayMs: 0 };
  const renewals: { lease: string; outcome?: "ok" | "failed" }[] = [];
  const hang = (signal?: AbortSignal) =>
    new Promise<never>((_, reject) => {
      signal?.addEventListener("abort", () => reject(new RpcError("DEADLINE_EXCEEDED")), {
        once: true,
      });
    });
  const wrap = (lease: Lease): Lease => ({
    id: lease.id,
    ttlMs: lease.ttlMs,
    keepAlive: async (opts) => {
      const renewal: (typeof renewals)[number] = { lease: lease.id };
      renewals.push(renewal);
      try {
        if (ctl.frozen) return await hang(opts?.signal);
        if (failing.has(lease.id)) throw new RpcError("STORE_UNAVAILABLE");
        await lease.keepAlive(opts);
        if (ctl.answerDelayMs > 0)
          await Promise.race([sleep(ctl.answerDelayMs), hang(opts?.signal)]);
        renewal.outcome = "ok";
      } catch (err) {
        renewal.outcome = "failed";
        throw err;
      }
    },
    revoke: (opts) => lease.revoke(opts),
  });
  const wrapped: KvStore = {
    ...store,
    grantLease: async (ttlMs, opts) => {
      if (ctl.frozen) throw new RpcError("STORE_UNAVAILABLE");
      return wrap(await store.grantLease(ttlMs, opts));
    },
    lease: (id, ttlMs) => wrap(store.lease(id, ttlMs)),
    put: async (key, value, opts) => {
      const revision = await store.put(key, value, opts);
      if (ctl.putDelayMs > 0) await Promise.race([sleep(ctl.putDelayMs), hang(opts?.signal)]);
      return revision;
    },
  };
  return { store: wrapped, failing, ctl, renewals };
}

/** Long enough for any wait on the registry's ticks (1 s apart) on a loaded machine. */
const PATIENCE = { timeoutMs: 20_000, intervalMs: 20 };

describe("the runner registry's lease", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-runners-"));
  const sqlite = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  after(() => sqlite.close());
  const { store, failing, ctl, renewals } = storeWithFailingRenewals(sqlite);
  const leaseOf = async (id: string) => (await sqlite.get(`runners/${id}`))?.lease;
  /** How many keepalives of `lease` were asked for (with `outcome`: ended so). */
  const renewalsOf = (lease: string, outcome?: "ok" | "failed") =>
    renewals.filter((r) => r.lease === lease && (outcome === undefined || r.outcome === outcome))
      .length;

  it("outlives a renewal that failed while the lease was surely alive", async (t) => {
    let lost = 0;
    const runner = await registerRunner(store, "r-transient", TTL_MS, silentLogger, () => lost++);
    t.after(() => runner.close());
    const lease = await leaseOf(runner.id);
    assert.ok(lease);
    failing.add(lease);
    await eventually(() => renewalsOf(lease, "failed") === 1, PATIENCE); // one renewal fails
    failing.delete(lease);
    // Two renewals after it: the second is past when a lost lease would have been taken as lost.
    const ok = renewalsOf(lease, "ok");
    await eventually(() => renewalsOf(lease, "ok") >= ok + 2, PATIENCE);
    assert.equal(renewalsOf(lease, "failed"), 1);
    assert.equal(lost, 0, "the process's migrations were not stopped");
    assert.equal(await leaseOf(runner.id), lease, "still registered on the same lease");
  });

  it("is taken as lost once most of its TTL passed without a renewal, and registered again", async (t) => {
    let lost = 0;
    const runner = await registerRunner(store, "r-unrenewed", TTL_MS, silentLogger, () => lost++);
    t.after(() => runner.close());
    const lease = await leaseOf(runner.id);
    assert.ok(lease);
    failing.add(lease);
    const now = await eventually(async () => {
      const current = await leaseOf(runner.id);
      return lost > 0 && current !== undefined && current !== lease && current;
    }, PATIENCE);
    // A renewal of the new lease: the loss is not taken again meanwhile.
    await eventually(() => renewalsOf(now, "ok") > 0, PATIENCE);
    assert.equal(lost, 1, "stopped once");
    assert.ok(now !== lease, "registered on a new lease");
    assert.equal(await runner.isAlive(runner.id), true);
  });

  it("is taken as lost at once when its lease expired", async (t) => {
    let lost = 0;
    const runner = await registerRunner(store, "r-expired", TTL_MS, silentLogger, () => lost++);
    t.after(() => runner.close());
    const lease = await leaseOf(runner.id);
    assert.ok(lease);
    const before = renewalsOf(lease);
    await sqlite.lease(lease, TTL_MS).revoke();
    await eventually(async () => lost > 0 && (await runner.isAlive(runner.id)), PATIENCE);
    // Not after the renewals of most of its TTL had failed, as one that merely failed would be.
    assert.equal(renewalsOf(lease) - before, 1, "stopped at the next renewal");
    assert.equal(lost, 1);
    assert.equal(await runner.isAlive(runner.id), true, "registered again");
  });
  it("is taken as lost before its lease can expire, however late renewals are answered", async (t) => {
    let lostAt: number | undefined;
    const runner = await registerRunner(store, "r-late", TTL_MS, silentLogger, () => {
      lostAt ??= performance.now();
    });
    t.after(() => {
      ctl.answerDelayMs = 0;
      ctl.frozen = false;
      return runner.close();
    });
    const lease = await leaseOf(runner.id);
    ctl.answerDelayMs = 1000; // etcd renews on receipt; the answer comes 1 s later
    await sleep(2500);
    ctl.frozen = true;
    let goneAt: number | undefined;
    // Taken as lost about 2.4 s after the last renewal was sent; looked for far longer.
    const until = performance.now() + 20_000;
    while (lostAt === undefined && performance.now() < until) {
      if ((await leaseOf(runner.id)) !== lease) goneAt ??= performance.now();
      await sleep(20);
    }
    assert.ok(lostAt !== undefined, "taken as lost");
    assert.equal(goneAt, undefined, "its lease expired before this process took it as lost");
  });

  it("stops the migrations once for one loss, however long registering again fails", async (t) => {
    let lost = 0;
    const runner = await registerRunner(store, "r-down", TTL_MS, silentLogger, () => lost++);
    t.after(() => {
      ctl.frozen = false;
      return runner.close();
    });
    ctl.frozen = true;
    await sleep(TTL_MS * 3);
    ctl.frozen = false;
    await eventually(() => runner.isAlive(runner.id), PATIENCE);
    assert.equal(lost, 1);
    assert.equal(await runner.isAlive(runner.id), true, "registered again after the outage");
  });

  it("leaves no registration behind when closed during a renewal", async () => {
    let lost = 0;
    const runner = await registerRunner(store, "r-close", TTL_MS, silentLogger, () => lost++);
    ctl.answerDelayMs = 5000; // the next renewal hangs
    try {
      await sleep(TTL_MS / 3 + 200);
      await runner.close();
    } finally {
      ctl.answerDelayMs = 0;
    }
    await sleep(TTL_MS);
    assert.equal(await leaseOf(runner.id), undefined, "unregistered");
    assert.equal(lost, 0);
  });
  it("leaves no registration behind when closed while registering again", async () => {
    const runner = await registerRunner(store, "r-close-reg", TTL_MS, silentLogger);
    const lease = await leaseOf(runner.id);
    assert.ok(lease);
    ctl.putDelayMs = 5000; // the new registration's put applies at once and is answered late
    try {
      await sqlite.lease(lease, TTL_MS).revoke(); // lost: the next tick registers again
      await eventually(async () => (await leaseOf(runner.id)) !== undefined, PATIENCE);
      assert.ok(await leaseOf(runner.id), "registering again");
      await runner.close();
    } finally {
      ctl.putDelayMs = 0;
    }
    assert.equal(await leaseOf(runner.id), undefined, "unregistered at close");
  });
});
