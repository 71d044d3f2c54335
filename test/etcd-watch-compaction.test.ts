import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createEtcdStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { IN_CI } from "./helpers/required-tools.js";
import { recordWatches } from "./helpers/watch-recorder.js";

/**
 * etcd's history is compacted (an operator's auto-compaction) past the last
 * event of a quiet prefix, and then the watch's stream breaks (a restart).
 * Resumed from its last event, etcd refused the watch as compacted, though
 * nothing was missed, and every mirror of a quiet prefix reloaded. etcd's
 * progress responses say how far the watch has been brought: it resumes
 * after that.
 */
describe("a watch of a quiet prefix across a compaction", async () => {
  // Progress every second (etcd's default is 10 minutes).
  const etcd: EtcdServer | undefined = await startEtcd([
    "--experimental-watch-progress-notify-interval=1s",
  ]).catch((err: unknown) => {
    if (IN_CI) throw err;
    return undefined;
  });
  if (etcd === undefined) {
    console.log("!!! etcd is not installed: the watch compaction test is SKIPPED.");
    return;
  }
  after(() => etcd.stop());

  it("resumes after the compacted revision, without WATCH_COMPACTED, and sees the next write", async () => {
    const store = createEtcdStore({ endpoints: [etcd.endpoint], prefix: "/compaction/" });
    const stop = new AbortController();
    const watches = recordWatches(store, "quiet/", stop.signal);
    try {
      const first = await store.put("quiet/a", new Uint8Array([1]));
      watches.open(1, first);
      await eventually(() => assert.ok(watches.seen[0]?.has("quiet/a")));
      // Other keys move the store on; then the history is compacted past quiet/a.
      for (let i = 0; i < 20; i++) await store.put(`busy/${i}`, new Uint8Array([1]));
      // A progress response past the busy writes must reach the watch before the compaction
      // (one a second); nothing outside the store shows it has, so a fixed span: five of them,
      // as on a loaded machine two and a half were thin.
      await sleep(5000);
      const now = await store.revision({});
      // etcd's own JSON gateway (what `etcdctl compact` asks for), so no client tool is needed.
      const compacted = await fetch(`${etcd.endpoint}/v3/kv/compaction`, {
        method: "POST",
        body: JSON.stringify({ revision: String(now), physical: true }),
      });
      assert.equal(compacted.status, 200, await compacted.text());
      await etcd.restart?.();
      await store.put("quiet/b", new Uint8Array([1]));
      await eventually(() => assert.ok(watches.seen[0]?.has("quiet/b"), "the next write seen"), {
        timeoutMs: 15_000,
      });
      assert.deepEqual(watches.ended, [], "the watch did not end");
    } finally {
      stop.abort();
      await watches.done();
      await store.close();
    }
  });
});
