import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RpcError } from "../src/core/index.js";
import { createEtcdStore } from "../src/store/index.js";
import { startEtcdCluster } from "./helpers/etcd-server.js";

/**
 * Writes that start this long after the leader died must all succeed: the election (about a
 * second at the cluster's 1 s election timeout) and the client's move, with room for a loaded
 * machine whose etcd members get little CPU (3 s once, three elections' worth, was thin).
 */
const DETECTION_MS = 5000;
const WRITERS = 8;
const BEFORE_MS = 1500;
/** The load goes on 4 s past DETECTION_MS. */
const AFTER_MS = 9000;

describe("the etcd store against a three-member cluster", () => {
  it("loses no write once it has noticed the leader was killed, and keeps reading", async (t) => {
    const cluster = await startEtcdCluster(3);
    if (cluster === undefined) return t.skip("etcd is not installed");
    const store = createEtcdStore({
      endpoints: cluster.endpoints,
      prefix: "/failover/",
      callTimeoutMs: 5000,
    });
    const outcomes: {
      startedAt: number;
      endedAt: number;
      ok: boolean;
      reason?: string;
      read: boolean;
    }[] = [];
    let stop = false;
    let n = 0;
    const worker = async (w: number) => {
      while (!stop && n < 200_000) {
        const i = n++;
        const startedAt = Date.now();
        const read = i % 4 === 3;
        try {
          if (read) await store.get(`k/${w}`);
          else await store.put(`k/${w}`, new TextEncoder().encode(String(i)));
          outcomes.push({ startedAt, endedAt: Date.now(), ok: true, read });
        } catch (err) {
          const reason =
            err instanceof RpcError
              ? `${err.reason}:${String((err.cause as Error)?.message)}`
              : String(err);
          outcomes.push({ startedAt, endedAt: Date.now(), ok: false, reason, read });
        }
      }
    };
    try {
      const workers = Array.from({ length: WRITERS }, (_, w) => worker(w));
      await new Promise((r) => setTimeout(r, BEFORE_MS));
      const leader = await cluster.leader();
      assert.ok(leader >= 0);
      cluster.members[leader]?.kill();
      const killedAt = Date.now();
      await new Promise((r) => setTimeout(r, AFTER_MS));
      stop = true;
      await Promise.all(workers);
      // Calls still in flight at the kill belong to the fault: sent to the dead leader, they may have applied.
      const before = outcomes.filter((o) => o.endedAt < killedAt);
      const during = outcomes.filter(
        (o) => o.endedAt >= killedAt && o.startedAt < killedAt + DETECTION_MS,
      );
      const after = outcomes.filter((o) => o.startedAt >= killedAt + DETECTION_MS);
      const failed = (os: typeof outcomes) => os.filter((o) => !o.ok);
      const writes = (os: typeof outcomes) => os.filter((o) => !o.read);
      t.diagnostic(
        `leader m${leader} killed; writes before: ${writes(before).length} (${failed(writes(before)).length} failed); ` +
          `in the first ${DETECTION_MS} ms: ${writes(during).length} (${failed(writes(during)).length} failed: ${[...new Set(failed(during).map((o) => o.reason?.split(",")[0]))].join("; ")}); ` +
          `after: ${writes(after).length} (${failed(writes(after)).length} failed); reads failed after: ${failed(after.filter((o) => o.read)).length}`,
      );
      assert.deepEqual(
        failed(before).map((o) => o.reason),
        [],
      );
      assert.ok(writes(after).length > 100, "the load went on after the fault");
      assert.deepEqual(
        failed(after).map((o) => o.reason),
        [],
        "no call fails once the client has noticed",
      );
    } finally {
      stop = true;
      await store.close().catch(() => {});
      await cluster.stop();
    }
  });
});
