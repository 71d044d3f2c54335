import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd, startEtcdCluster } from "./helpers/etcd-server.js";
import { slowAnswers } from "./helpers/slow-answers.js";
import { recordWatches } from "./helpers/watch-recorder.js";

const TTL_MS = 30_000;

/** LeaseKeepAlive messages an etcd member has received (its own counter). */
async function keepalivesReceived(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const m =
    /^grpc_server_msg_received_total\{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb\.Lease",grpc_type="bidi_stream"\} (\d+)$/m.exec(
      text,
    );
  return Number(m?.[1] ?? 0);
}

/** Reads (Range calls) an etcd member has answered. */
async function rangesServed(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const m =
    /^grpc_server_handled_total\{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb\.KV",grpc_type="unary"\} (\d+)$/m.exec(
      text,
    );
  return Number(m?.[1] ?? 0);
}

/**
 * Renews each lease every `everyMs` until `stop`, one renewal at a time per
 * lease, and records when each renewal succeeded.
 */
function renewing(store: KvStore, ids: readonly string[], everyMs: number) {
  const renewedAt = new Map<string, number[]>(ids.map((id) => [id, [Date.now()]]));
  const failures: string[] = [];
  let renewals = 0;
  let stopped = false;
  const loops = ids.map(async (id) => {
    while (!stopped) {
      const started = Date.now();
      renewals++;
      try {
        await store.lease(id, TTL_MS).keepAlive();
        renewedAt.get(id)?.push(Date.now());
      } catch (err) {
        failures.push(`${id}: ${String(err)}`);
      }
      await sleep(Math.max(0, everyMs - (Date.now() - started)));
    }
  });
  return {
    renewedAt,
    failures,
    renewals: () => renewals,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
    /** The longest time any lease went without a renewal between `from` and now. */
    longestGap(from: number): number {
      let longest = 0;
      for (const times of renewedAt.values()) {
        const at = [...times.filter((t) => t >= from), Date.now()];
        let last = Math.max(...times.filter((t) => t < from), from);
        for (const t of at) {
          longest = Math.max(longest, t - last);
          last = t;
        }
      }
      return longest;
    },
  };
}

// Two at a time: each case starts its own etcd (or cluster) and store and shares
// nothing with the others, and mostly waits (15 to 25 s each). The case that
// blocks this process's event loop is in the next describe, run after these, alone.
describe("lease keepalives", { concurrency: 2 }, () => {
  it("keep every lease renewed while an etcd member is stopped with its connections open", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    const store = createEtcdStore({ endpoints: cluster.endpoints, prefix: "/ka-frozen/" });
    let frozen: EtcdServer | undefined;
    let load: ReturnType<typeof renewing> | undefined;
    let writer: KvStore | undefined;
    // 30 watches, each on one of the three members: some are on the stopped one.
    const stopWatches = new AbortController();
    const watches = recordWatches(store, "w/", stopWatches.signal);
    watches.open(30, 0);
    try {
      const ids: string[] = [];
      for (let i = 0; i < 32; i++) ids.push((await store.grantLease(TTL_MS)).id);
      load = renewing(store, ids, 2000);
      await sleep(3000);
      const leader = await cluster.leader();
      const stopping = (leader + 1) % 3;
      frozen = cluster.members[stopping];
      writer = createEtcdStore({
        endpoints: cluster.endpoints.filter((_, i) => i !== stopping),
        prefix: "/ka-frozen/",
      });
      frozen?.signal("SIGSTOP");
      const frozenAt = Date.now();
      const written = await writer.put("w/after-stop", new Uint8Array([1]));
      assert.ok(written > 0);
      // Set aside by now: the next renewal there is sent within 2 s, found silent 3 s
      // later, answered elsewhere, and the member set aside 8 s after that (13 s,
      // plus however late a loaded machine runs the timers). No read waits on it then
      // (a read attempt there takes 2 s).
      await sleep(Math.max(0, frozenAt + 15_000 - Date.now()));
      // Rounds of 15 reads until one has none slow, up to 25 s after the stop: on a loaded
      // machine (a CI run, load 10) the timers above ran 2 s late and the first round, at
      // 15 s, still found the member in use (seen on main and with this file's cases run two
      // at a time). A member never set aside still fails it.
      let slowest = Number.POSITIVE_INFINITY;
      while (slowest >= 1000 && Date.now() < frozenAt + 25_000) {
        slowest = 0;
        for (let i = 0; i < 15; i++) {
          const started = Date.now();
          await store.get("probe");
          slowest = Math.max(slowest, Date.now() - started);
        }
      }
      await sleep(Math.max(0, frozenAt + 18_000 - Date.now()));
      // Seen before the member is back: a watch that waited on it is seen late.
      const late = watches.seen.map((at) => (at.get("w/after-stop") ?? Date.now()) - frozenAt);
      frozen?.signal("SIGCONT");
      frozen = undefined;
      await sleep(2000);
      await load.stop();
      const gap = load.longestGap(frozenAt);
      t.diagnostic(
        `longest time a lease went unrenewed: ${gap} ms; failed renewals: ${load.failures.length}; slowest read once set aside: ${slowest} ms; a write after the stop seen by the watches after (ms): ${late.join(",")}`,
      );
      // Watches on the stopped member go unanswered and are moved (about 9 s
      // at most); left there, gRPC's keepalive gives up on the connection
      // only about 37 s after this stop (its ping timer started with the store).
      assert.ok(
        late.some((ms) => ms > 2000),
        "no watch was on the stopped member: the test saw nothing",
      );
      assert.ok(
        late.every((ms) => ms < 16_000),
        `a watch saw the write ${Math.max(...late)} ms after the stop`,
      );
      assert.deepEqual(watches.ended, [], "no watch ended");
      assert.deepEqual(load.failures, [], "no renewal failed");
      assert.ok(
        slowest < 1000,
        `a read took ${slowest} ms 25 s after the stop: the stopped member was not set aside`,
      );
      // Renewed every 2 s; a stream to the stopped member is given up after 3 s of silence.
      assert.ok(gap < 9000, `a lease went ${gap} ms without a renewal (TTL ${TTL_MS} ms)`);
    } finally {
      frozen?.signal("SIGCONT");
      await load?.stop();
      stopWatches.abort();
      await watches.done();
      await writer?.close();
      await store.close();
      await cluster.stop();
    }
  });

  it("sets the stopped leader aside, not a follower that waited on it", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    const store = createEtcdStore({ endpoints: cluster.endpoints, prefix: "/ka-leader/" });
    let frozen: EtcdServer | undefined;
    let load: ReturnType<typeof renewing> | undefined;
    try {
      // A follower's streams forwarding to the stopped leader stay silent until etcd's ~7 s timeout.
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const batch = await Promise.all(
          Array.from({ length: 100 }, () => store.grantLease(TTL_MS)),
        );
        ids.push(...batch.map((l) => l.id));
      }
      load = renewing(store, ids, 3000);
      await sleep(3000);
      const leader = await cluster.leader();
      frozen = cluster.members[leader];
      frozen?.signal("SIGSTOP");
      const frozenAt = Date.now();
      const live = cluster.endpoints.filter((_, i) => i !== leader);
      /** Reads served by each live member, and the slowest, over 30 reads. */
      const probe = async () => {
        const before = await Promise.all(live.map(rangesServed));
        let slowest = 0;
        for (let i = 0; i < 30; i++) {
          const started = Date.now();
          await store.get("probe");
          slowest = Math.max(slowest, Date.now() - started);
        }
        const after = await Promise.all(live.map(rangesServed));
        return { served: after.map((n, i) => n - (before[i] ?? 0)), slowest };
      };
      await sleep(7000);
      const early = await probe(); // the followers' forwarded renewals time out about now
      await sleep(Math.max(0, frozenAt + 15_000 - Date.now()));
      const late = await probe(); // the leader set aside by now
      frozen?.signal("SIGCONT");
      frozen = undefined;
      await load.stop();
      const gap = load.longestGap(frozenAt);
      t.diagnostic(
        `reads served by the live members at 7 s: ${early.served}; at 15 s: ${late.served}, slowest ${late.slowest} ms; longest unrenewed ${gap} ms; failed renewals ${load.failures.length}`,
      );
      for (const { served } of [early, late])
        assert.ok(
          served.every((n) => n > 0),
          `a live member was left out: ${served.join(", ")}`,
        );
      assert.ok(late.slowest < 1000, `a read took ${late.slowest} ms: the leader not set aside`);
      assert.deepEqual(load.failures, [], "no renewal failed");
    } finally {
      frozen?.signal("SIGCONT");
      await load?.stop();
      await store.close();
      await cluster.stop();
    }
  });

  for (const delayMs of [2500, 3500]) {
    describe(`on an etcd whose answers take ${delayMs} ms`, async () => {
      const etcd = await startEtcd();
      if (etcd === undefined) return; // under CI=true startEtcd throws instead
      const proxy = await slowAnswers(Number(new URL(etcd.endpoint).port), delayMs);
      const direct = createEtcdStore({ endpoints: [etcd.endpoint], prefix: "/ka-slow/" });
      const slow = createEtcdStore({
        endpoints: [`http://127.0.0.1:${proxy.port}`],
        prefix: "/ka-slow/",
      });
      after(async () => {
        await slow.close();
        await direct.close();
        proxy.server.close();
        await etcd.stop();
      });

      // Under the 3 s silence limit, one copy; over it, a second on a new stream, and the first answer wins.
      const copies = delayMs < 3000 ? 1 : 2;
      it(`renews every lease, sending each keepalive at most ${copies} time(s)`, async (t) => {
        const ids: string[] = [];
        for (let i = 0; i < 16; i++) ids.push((await direct.grantLease(TTL_MS)).id);
        // Opens the slow store's connection and streams before counting.
        await Promise.all(ids.map((id) => slow.lease(id, TTL_MS).keepAlive()));
        const before = await keepalivesReceived(etcd.endpoint);
        const load = renewing(slow, ids, 1000);
        await sleep(8000);
        await load.stop();
        const sent = (await keepalivesReceived(etcd.endpoint)) - before;
        t.diagnostic(`${load.renewals()} renewals sent ${sent} keepalives`);
        assert.deepEqual(load.failures, [], "no renewal failed");
        assert.ok(load.renewals() >= 16, `only ${load.renewals()} renewals`);
        if (copies === 1) assert.equal(sent, load.renewals(), "one keepalive per renewal");
        else assert.ok(sent <= 2 * load.renewals(), `${sent} keepalives for ${load.renewals()}`);
      });
    });
  }
});

describe("lease keepalives in a process too busy to read", () => {
  it("sets no member aside when this process, not etcd, was too busy to read the answers", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    const store = createEtcdStore({ endpoints: cluster.endpoints, prefix: "/ka-busy/" });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 32; i++) ids.push((await store.grantLease(TTL_MS)).id);
      await Promise.all(ids.map((id) => store.lease(id, TTL_MS).keepAlive()));
      for (let round = 1; round <= 3; round++) {
        const renewals = ids.map((id) => store.lease(id, TTL_MS).keepAlive());
        // The event loop blocked past the silence limit (a long GC, a CPU-bound handler).
        const until = Date.now() + 4000;
        while (Date.now() < until) {
          /* busy */
        }
        await Promise.all(renewals);
        const before = await Promise.all(cluster.endpoints.map(rangesServed));
        for (let i = 0; i < 30; i++) await store.get("probe");
        const after = await Promise.all(cluster.endpoints.map(rangesServed));
        const served = after.map((n, i) => n - (before[i] ?? 0));
        t.diagnostic(`round ${round}: reads served by each member after the block: ${served}`);
        assert.ok(
          served.every((n) => n > 0),
          `round ${round}: a member was left out: reads served ${served.join(", ")}`,
        );
      }
    } finally {
      await store.close();
      await cluster.stop();
    }
  });
});
