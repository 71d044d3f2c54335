import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd, startEtcdCluster } from "./helpers/etcd-server.js";
import { slowAnswers } from "./helpers/slow-answers.js";
import { recordWatches } from "./helpers/watch-recorder.js";

/** Resolves once every watch of `seen` has seen `key`; rejects after `withinMs`. */
async function eventuallySeen(
  seen: readonly Map<string, number>[],
  key: string,
  withinMs: number,
): Promise<void> {
  const until = Date.now() + withinMs;
  while (!seen.every((at) => at.has(key))) {
    if (Date.now() > until) throw new Error(`${key} not seen by every watch in ${withinMs} ms`);
    await sleep(100);
  }
}

/**
 * Waits (at most `boundMs`) for every watch of `w` to see `key`, then checks
 * that each did within `boundMs` of `since` and that none ended; `report`
 * names what the times are, for the test's diagnostics.
 */
async function seenWithin(
  t: { diagnostic(message: string): void },
  w: { seen: readonly Map<string, number>[]; ended: readonly string[] },
  key: string,
  since: number,
  boundMs: number,
  report: string,
): Promise<void> {
  await eventuallySeen(w.seen, key, boundMs - (Date.now() - since)).catch(() => undefined);
  const late = w.seen.map((at) => (at.get(key) ?? Date.now()) - since);
  t.diagnostic(`${report}: ${late.join(",")}`);
  assert.ok(
    late.every((ms) => ms < boundMs),
    `a watch saw ${key} ${Math.max(...late)} ms late`,
  );
  assert.deepEqual(w.ended, [], "no watch ended");
}

/** Writes `key` once etcd takes writes again (an election may follow a pause). */
async function eventuallyWritten(store: KvStore, key: string): Promise<void> {
  const until = Date.now() + 15_000;
  for (;;) {
    try {
      await store.put(key, new Uint8Array([1]));
      return;
    } catch (err) {
      if (Date.now() > until) throw err;
      await sleep(200);
    }
  }
}

/**
 * Opens 10 watches on a store of `endpoints`, pauses etcd for 20 s with
 * `signal` (SIGSTOP, then SIGCONT), writes, and checks that no watch ended
 * and every one saw the write.
 */
async function keptThroughPause(
  endpoints: readonly string[],
  prefix: string,
  signal: (name: NodeJS.Signals) => void,
): Promise<void> {
  const store = createEtcdStore({ endpoints, prefix });
  const stop = new AbortController();
  const w = recordWatches(store, "w/", stop.signal);
  let paused = false;
  try {
    w.open(10, 0);
    await sleep(1000);
    signal("SIGSTOP");
    paused = true;
    await sleep(20_000);
    signal("SIGCONT");
    paused = false;
    await eventuallyWritten(store, "w/after-pause");
    await sleep(2000);
    assert.deepEqual(w.ended, [], "no watch ended");
    const saw = w.seen.filter((at) => at.has("w/after-pause")).length;
    assert.equal(saw, 10, "every watch saw the write after the pause");
  } finally {
    if (paused) signal("SIGCONT");
    stop.abort();
    await w.done();
    await store.close();
  }
}

describe("watches on a stopped etcd member", () => {
  it("are reopened on another member, whether opened before the stop or after, with no lease renewals to notice it", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    // Watches only: no keepalive stream of this store ever meets the stopped member.
    const store = createEtcdStore({ endpoints: cluster.endpoints, prefix: "/silence/" });
    const stop = new AbortController();
    const w = recordWatches(store, "w/", stop.signal);
    let frozen: EtcdServer | undefined;
    let writer: KvStore | undefined;
    try {
      // Each opened on one of the three members at random: some on the one stopped below.
      w.open(30, 0);
      await sleep(2000);
      const stopping = ((await cluster.leader()) + 1) % 3;
      writer = createEtcdStore({
        endpoints: cluster.endpoints.filter((_, i) => i !== stopping),
        prefix: "/silence/",
      });
      await writer.put("w/before", new Uint8Array([1]));
      frozen = cluster.members[stopping];
      frozen?.signal("SIGSTOP");
      const frozenAt = Date.now();
      await sleep(1000);
      // Opened after the stop: a first stream on the stopped member is never confirmed.
      const mark = await writer.put("w/mark", new Uint8Array([1]));
      w.open(30, mark);
      await sleep(500);
      await writer.put("w/after-stop", new Uint8Array([1]));
      await sleep(Math.max(0, frozenAt + 16_000 - Date.now()));
      const late = w.seen.map((at) => (at.get("w/after-stop") ?? Date.now()) - frozenAt);
      frozen?.signal("SIGCONT");
      frozen = undefined;
      t.diagnostic(
        `the write 1.5 s after the stop, seen (ms after the stop) by the watches opened before: ${late.slice(0, 30).join(",")}; after: ${late.slice(30).join(",")}`,
      );
      assert.ok(
        late.slice(0, 30).some((ms) => ms > 3000),
        "no watch was on the stopped member: the test saw nothing",
      );
      // Asked after 3 s without a word, given up on 5 s later: about 9 s at most.
      assert.ok(
        late.every((ms) => ms < 13_000),
        `a watch saw the write ${Math.max(...late)} ms after the stop`,
      );
      assert.deepEqual(w.ended, [], "no watch ended");
    } finally {
      frozen?.signal("SIGCONT");
      stop.abort();
      await w.done();
      await writer?.close();
      await store.close();
      await cluster.stop();
    }
  });

  it("leave the stopped member again when the only other one answers too slowly, instead of waiting there for it", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    const leader = await cluster.leader();
    const [stopping, slow, other] = [(leader + 1) % 3, (leader + 2) % 3, leader];
    // The store knows two members: one to be stopped, one whose answers come 2.7 s late,
    // more than the 2.5 s a moved watch waits for a confirmation before trying elsewhere.
    const proxy = await slowAnswers(Number(new URL(cluster.endpoints[slow] ?? "").port), 2700);
    const store = createEtcdStore({
      endpoints: [cluster.endpoints[stopping] ?? "", `http://127.0.0.1:${proxy.port}`],
      prefix: "/slow-other/",
    });
    const writer = createEtcdStore({
      endpoints: [cluster.endpoints[other] ?? ""],
      prefix: "/slow-other/",
    });
    const stop = new AbortController();
    const w = recordWatches(store, "w/", stop.signal);
    let frozen: EtcdServer | undefined;
    try {
      w.open(10, await writer.put("w/before", new Uint8Array([1])));
      await eventuallySeen(w.seen, "w/before", 20_000);
      frozen = cluster.members[stopping];
      frozen?.signal("SIGSTOP");
      const frozenAt = Date.now();
      await writer.put("w/after-stop", new Uint8Array([1]));
      // Moved to the slow member and cut there at 2.5 s, a watch must not then wait on the
      // stopped one, unconfirmed and never asked, until it is back (after this wait).
      await seenWithin(t, w, "w/after-stop", frozenAt, 38_000, "seen, ms after the stop");
    } finally {
      frozen?.signal("SIGCONT");
      stop.abort();
      await w.done();
      await writer.close();
      await store.close();
      proxy.server.close();
      await cluster.stop();
    }
  });

  it("are confirmed at last when every member answers 10 s late, not moved on every 9 s for good", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    let late = 0;
    const proxies = await Promise.all(
      cluster.endpoints.map((e) => slowAnswers(Number(new URL(e).port), () => late)),
    );
    const store = createEtcdStore({
      endpoints: proxies.map((p) => `http://127.0.0.1:${p.port}`),
      prefix: "/slow-all/",
    });
    const writer = createEtcdStore({ endpoints: [...cluster.endpoints], prefix: "/slow-all/" });
    const stop = new AbortController();
    const w = recordWatches(store, "w/", stop.signal);
    try {
      w.open(3, await writer.put("w/before", new Uint8Array([1])));
      await eventuallySeen(w.seen, "w/before", 20_000);
      late = 10_000;
      const slowAt = Date.now();
      await writer.put("w/during", new Uint8Array([1]));
      // Moved after about 9 s of silence, then again, each further stream left longer
      // before it is asked: one is confirmed 10 s after it opened and brings the write.
      await seenWithin(t, w, "w/during", slowAt, 55_000, "seen, ms after answers became 10 s late");
    } finally {
      late = 0;
      stop.abort();
      await w.done();
      await writer.close();
      await store.close();
      for (const p of proxies) p.server.close();
      await cluster.stop();
    }
  });

  it("are kept when every member is paused for 20 s, and see the next write once they are back", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    // Silent, moved, cut once: then the watch waits for etcd, however long.
    await keptThroughPause(cluster.endpoints, "/silence-all/", (name) => {
      for (const m of cluster.members) m.signal(name);
    }).finally(() => cluster.stop());
  });

  it("are kept when the store's only etcd is paused for 20 s", async (t) => {
    const etcd = await startEtcd();
    if (etcd === undefined) return t.skip("etcd is not installed");
    // Longer than the quiet time, the wait for an answer, a cut attempt and the 5 s
    // reconnect budget together (about 17 s): aab3ac8 reopened every watch on the same
    // etcd against that budget, and every one ended. (One endpoint is never probed now.)
    await keptThroughPause([etcd.endpoint], "/silence-one/", (name) => etcd.signal(name)).finally(
      () => etcd.stop(),
    );
  });
});
