import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RpcError } from "../../src/core/index.js";
import { type KvStore, settleWrite, type WatchEvent } from "../../src/store/index.js";
import { eventually } from "./eventually.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const isReason = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;

/** Collects `count` events from a watch, failing after `timeoutMs`. */
async function collect(
  store: KvStore,
  prefix: string,
  from: number,
  count: number,
  timeoutMs = 15_000,
): Promise<WatchEvent[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const out: WatchEvent[] = [];
  try {
    for await (const e of store.watch(prefix, from, { signal: ac.signal })) {
      out.push(e);
      if (out.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

/**
 * The one conformance suite every KvStore backend must pass unchanged.
 * `open` gives a fresh, empty store (its own prefix or file).
 */
export function storeConformance(
  name: string,
  open: () => Promise<KvStore>,
  teardown: () => Promise<void> = async () => {},
): void {
  describe(`KvStore conformance: ${name}`, () => {
    let store: KvStore;
    before(async () => {
      store = await open();
    });
    after(async () => {
      await store?.close();
      await teardown();
    });

    it("puts, gets and deletes with revisions that only move forward", async () => {
      const r1 = await store.put("crud/a", enc("one"));
      const r2 = await store.put("crud/a", enc("two"));
      assert.ok(r2 > r1);
      const kv = await store.get("crud/a");
      assert.equal(dec(kv?.value ?? new Uint8Array()), "two");
      assert.equal(kv?.version, 2);
      assert.equal(kv?.createRevision, r1);
      assert.equal(kv?.modRevision, r2);
      assert.equal(await store.revision(), r2);
      const del = await store.delete("crud/a");
      assert.equal(del.deleted, true);
      assert.ok(del.revision > r2);
      assert.equal(await store.get("crud/a"), undefined);
      assert.equal((await store.delete("crud/a")).deleted, false);
    });

    it("ranges by prefix only, in key order", async () => {
      for (const k of ["pfx/b", "pfx/a", "pfxx/c", "pf/d", "pfx/c/deep"])
        await store.put(k, enc(k));
      const page = await store.range("pfx/");
      assert.deepEqual(
        page.kvs.map((kv) => kv.key),
        ["pfx/a", "pfx/b", "pfx/c/deep"],
      );
      assert.equal(page.more, false);
    });

    it("pages through 10,000 keys, each exactly once and in order", async () => {
      const keys = Array.from({ length: 10_000 }, (_, i) => `many/${String(i).padStart(5, "0")}`);
      for (let i = 0; i < keys.length; i += 100) {
        const r = await store.txn({
          compares: [],
          success: keys.slice(i, i + 100).map((key) => ({ type: "put", key, value: enc("x") })),
        });
        assert.equal(r.succeeded, true);
      }
      const seen: string[] = [];
      let afterKey: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await store.range("many/", { limit: 1000, after: afterKey });
        pages++;
        seen.push(...page.kvs.map((kv) => kv.key));
        if (!page.more) break;
        afterKey = page.kvs[page.kvs.length - 1]?.key;
        assert.ok(pages < 20, "paging terminates");
      }
      assert.equal(seen.length, keys.length);
      assert.deepEqual(seen, keys);
    });

    it("creates a key only if absent", async () => {
      const create = () =>
        store.txn({
          compares: [{ key: "once/k", modRevision: 0 }],
          success: [{ type: "put", key: "once/k", value: enc("first") }],
        });
      assert.equal((await create()).succeeded, true);
      const second = await store.txn({
        compares: [{ key: "once/k", modRevision: 0 }],
        success: [{ type: "put", key: "once/k", value: enc("second") }],
        failure: [{ type: "put", key: "once/lost", value: enc("yes") }],
      });
      assert.equal(second.succeeded, false);
      assert.equal(dec((await store.get("once/k"))?.value ?? new Uint8Array()), "first");
      assert.ok(await store.get("once/lost"), "the failure branch ran");
    });

    it("lets exactly one of 50 concurrent compare-and-swaps win", async () => {
      const rev = await store.put("cas/k", enc("0"));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.txn({
            compares: [{ key: "cas/k", modRevision: rev }],
            success: [{ type: "put", key: "cas/k", value: enc(String(i + 1)) }],
          }),
        ),
      );
      const winners = results.filter((r) => r.succeeded);
      assert.equal(winners.length, 1);
      const kv = await store.get("cas/k");
      assert.equal(kv?.version, 2);
      assert.equal(kv?.modRevision, winners[0]?.revision);
    });

    it("settles a write whose reply was lost: once settleWrite returns, the write has landed as it shows, or never lands", async () => {
      for (let i = 0; i < 20; i++) {
        const key = `settle/k${i}`;
        const rev = await store.put(key, enc("as read"));
        const lost = {
          compares: [{ key, modRevision: rev }],
          success: [{ type: "put" as const, key, value: enc("lost write") }],
        };
        // The lost write and the settling race; on alternate rounds one starts first.
        const [write, settled] =
          i % 2 === 0
            ? await Promise.all([store.txn(lost), settleWrite(store, key, rev)])
            : await Promise.all([settleWrite(store, key, rev), store.txn(lost)]).then(
                ([s, w]) => [w, s] as const,
              );
        const shown = dec(settled?.value ?? new Uint8Array());
        assert.equal(shown, write.succeeded ? "lost write" : "as read", `round ${i}`);
        const late = await store.txn(lost);
        assert.equal(late.succeeded, false, `round ${i}: the write never lands after`);
        assert.equal(dec((await store.get(key))?.value ?? new Uint8Array()), shown);
      }
    });

    it("watches from a revision after a burst: nothing missed, nothing repeated, order kept", async () => {
      const from = (await store.revision()) + 1;
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) writes.push(store.put(`burst/${i % 50}`, enc(String(i))));
      await Promise.all(writes);
      for (let i = 0; i < 10; i++) await store.delete(`burst/${i}`);
      await store.put("elsewhere/x", enc("not watched"));
      const events = await collect(store, "burst/", from, 310);
      assert.equal(events.length, 310);
      const revisions = events.map((e) => e.revision);
      assert.deepEqual(
        revisions,
        [...revisions].sort((a, b) => a - b),
        "in revision order",
      );
      assert.equal(new Set(revisions).size, 310, "each write once");
      assert.equal(events.filter((e) => e.type === "delete").length, 10);
      assert.ok(events.every((e) => e.key.startsWith("burst/")));
      const puts = events.filter((e) => e.type === "put").map((e) => Number(dec(e.value)));
      assert.deepEqual(
        [...puts].sort((a, b) => a - b),
        Array.from({ length: 300 }, (_, i) => i),
      );
    });

    it("delivers live changes after the history a watch started with", async () => {
      const from = await store.put("live/a", enc("before"));
      const got = collect(store, "live/", from, 2);
      await new Promise((r) => setTimeout(r, 200));
      await store.put("live/b", enc("after"));
      const events = await got;
      assert.deepEqual(
        events.map((e) => [e.key, dec(e.value)]),
        [
          ["live/a", "before"],
          ["live/b", "after"],
        ],
      );
    });

    it("deletes a lease's keys when it is not kept alive, and keeps them while it is", async () => {
      const lease = await store.grantLease(1000);
      await store.put("lease/gone", enc("x"), { lease: lease.id });
      const kept = await store.grantLease(2000);
      await store.put("lease/kept", enc("y"), { lease: kept.id });
      const timer = setInterval(() => void kept.keepAlive().catch(() => {}), 500);
      try {
        await eventually(
          async () => assert.equal(await store.get("lease/gone"), undefined, "expired key deleted"),
          { timeoutMs: 10_000, intervalMs: 100 },
        );
        assert.ok(await store.get("lease/kept"), "kept-alive key still there");
        await assert.rejects(lease.keepAlive(), isReason("LEASE_NOT_FOUND"));
      } finally {
        clearInterval(timer);
      }
      await kept.revoke();
      assert.equal(await store.get("lease/kept"), undefined);
    });

    it("renews a lease through a handle made from a key's lease id, as another process would", async () => {
      const granted = await store.grantLease(2000);
      await store.put("handle/k", enc("x"), { lease: granted.id });
      const leaseId = (await store.get("handle/k"))?.lease;
      assert.equal(leaseId, granted.id);
      const handle = store.lease(leaseId ?? "", 2000);
      const timer = setInterval(() => void handle.keepAlive().catch(() => {}), 400);
      try {
        // Past the TTL the key is still there: only the handle renewed it.
        await new Promise((r) => setTimeout(r, 3500));
        assert.ok(await store.get("handle/k"), "renewed through the handle");
      } finally {
        clearInterval(timer);
      }
      await handle.revoke();
      assert.equal(await store.get("handle/k"), undefined);
      await assert.rejects(
        store.lease(leaseId ?? "", 2000).keepAlive(),
        isReason("LEASE_NOT_FOUND"),
      );
    });

    it("answers each of many keepalives at once for its own lease, a revoked one and an abandoned one included", async () => {
      const leases = await Promise.all(Array.from({ length: 20 }, () => store.grantLease(5000)));
      const gone = leases[7];
      assert.ok(gone !== undefined);
      await gone.revoke();
      // A caller that gives up does not shift the answers meant for the others.
      const ac = new AbortController();
      const abandoned = leases[3]?.keepAlive({ signal: ac.signal });
      ac.abort();
      await abandoned?.catch(() => undefined);
      const outcomes = await Promise.allSettled(
        [...leases, ...leases].map((lease) => lease.keepAlive()),
      );
      outcomes.forEach((o, i) => {
        if (i % leases.length === 7)
          assert.ok(o.status === "rejected" && isReason("LEASE_NOT_FOUND")(o.reason), `lease ${i}`);
        else
          assert.equal(
            o.status,
            "fulfilled",
            `lease ${i}: ${o.status === "rejected" ? o.reason : ""}`,
          );
      });
      for (const lease of leases) if (lease !== gone) await lease.revoke();
    });

    it("stops a call whose signal is aborted, changing nothing", async () => {
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(
        store.put("abort/k", enc("x"), { signal: ac.signal }),
        isReason("CANCELLED"),
      );
      await assert.rejects(store.get("abort/k", { signal: ac.signal }), isReason("CANCELLED"));
      await assert.rejects(store.range("abort/", { signal: ac.signal }), isReason("CANCELLED"));
      assert.equal(await store.get("abort/k"), undefined);
      const events: WatchEvent[] = [];
      for await (const e of store.watch("abort/", 1, { signal: ac.signal })) events.push(e);
      assert.equal(events.length, 0);
    });

    it("refuses keys outside the contract and values over 1 MiB", async () => {
      await assert.rejects(async () => store.put("has space", enc("x")), TypeError);
      await assert.rejects(async () => store.put("", enc("x")), TypeError);
      await assert.rejects(
        async () => store.put("big/k", new Uint8Array(1024 * 1024 + 1)),
        isReason("VALUE_TOO_LARGE"),
      );
      assert.equal(await store.get("big/k"), undefined);
    });
  });
}
