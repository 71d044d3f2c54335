import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd, startEtcdCluster } from "./helpers/etcd-server.js";
import { eventuallySeen, recordWatches } from "./helpers/watch-recorder.js";

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
    // Until every watch saw it (a watch moved or cut during the pause may be reconnecting,
    // with backoff, on a loaded machine), not a fixed 2 s; then none may have ended.
    await eventuallySeen(w.seen, "w/after-pause", 20_000).catch(() => {});
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

// Two at a time: each case starts its own etcd (or cluster) and store, shares
// nothing with the others, and mostly waits on a stopped member (12 to 24 s).
describe("watches on a stopped etcd member", { concurrency: 2 }, () => {
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
      // The member stays stopped until every watch saw the write (or 22 s): a watch that
      // stayed on it would see the write only once it is continued.
      await eventuallySeen(
        w.seen,
        "w/after-stop",
        Math.max(0, frozenAt + 22_000 - Date.now()),
      ).catch(() => {});
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
      // Asked after 3 s without a word, given up on 5 s later: about 9 s at most; twice that
      // for a loaded machine, still short of the 22 s the member stays stopped.
      assert.ok(
        late.every((ms) => ms < 18_000),
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
