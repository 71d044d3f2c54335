import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { OperationRecordSchema } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../store/index.js";
import { watchOperations } from "./agent-operation-watch.js";
import { OPERATIONS_PREFIX, operationKey } from "./agent-operations.js";

/** The store, with the watches of the operations key family counted where they are opened and while open. */
function countingStore(store: KvStore) {
  const count = { opened: 0, open: 0, failNext: false };
  const counted: KvStore = Object.create(store);
  /** While held, reading the store's revision (the watch's first step) waits. */
  let revisionOpen: Promise<void> = Promise.resolve();
  let openRevision = () => {};
  const revision = {
    hold() {
      revisionOpen = new Promise((resolve) => {
        openRevision = resolve;
      });
    },
    release: () => openRevision(),
  };
  counted.revision = async (opts) => {
    await revisionOpen;
    return store.revision(opts);
  };
  counted.watch = (prefix, from, opts) => {
    const inner = store.watch(prefix, from, opts);
    if (prefix !== OPERATIONS_PREFIX) return inner;
    count.opened++;
    count.open++;
    return (async function* () {
      try {
        for await (const e of inner) {
          if (count.failNext) {
            count.failNext = false;
            throw new Error("watch lost");
          }
          yield e;
        }
      } finally {
        count.open--;
      }
    })();
  };
  return { store: counted, count, revision };
}

const put = (store: KvStore, node: string, id: string) =>
  store.put(
    operationKey(node, id),
    encodeMessage(OperationRecordSchema, create(OperationRecordSchema, { nodeId: node })),
  );

async function until(what: string, done: () => boolean): Promise<void> {
  // Bounded at ~15 s: a loaded machine's watch can take seconds; the assertion says if it never did.
  for (let i = 0; i < 1500 && !done(); i++) await sleep(10);
  assert.ok(done(), what);
}

describe("operations watch", () => {
  it("feeds every consumer of a store from one watch, resyncs one that fails on a record, and ends with the last", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-opwatch-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const { store, count } = countingStore(real);
    try {
      const seen = [[], [], []] as string[][];
      const resyncs = [0, 0, 0];
      const stops = seen.map(() => new AbortController());
      const consumers = seen.map((got, i) =>
        watchOperations({
          store,
          signal: stops[i]?.signal ?? AbortSignal.abort(),
          logger: silentLogger,
          onRecord: (r) => {
            got.push(r.nodeId);
            if (i === 0 && got.length <= 2) throw new Error("a consumer that fails");
          },
          onResync: () => {
            resyncs[i] = (resyncs[i] ?? 0) + 1;
          },
        }),
      );
      await Promise.all(consumers.map((c) => c.ready));
      assert.equal(count.opened, 1, "three consumers, one watch");
      // Two records in one write: the first consumer throws on both.
      const record = encodeMessage(
        OperationRecordSchema,
        create(OperationRecordSchema, { nodeId: "n1" }),
      );
      await store.txn({
        compares: [],
        success: ["op-1", "op-1b"].map((id) => ({
          type: "put",
          key: operationKey("n1", id),
          value: record,
        })),
      });
      await until("every consumer sees both", () => seen.every((s) => s.length === 2));
      // It missed them: it alone is asked to resync, once for both.
      await until("the failing consumer resyncs", () => resyncs[0] === 1);
      await sleep(1200);
      assert.deepEqual(resyncs, [1, 0, 0]);
      assert.deepEqual(seen, [
        ["n1", "n1"],
        ["n1", "n1"],
        ["n1", "n1"],
      ]);

      // The watch is lost: it resumes once and every consumer is asked to resync.
      count.failNext = true;
      await put(store, "n2", "op-2");
      await until("every consumer resyncs", () => resyncs.join() === "2,1,1");
      assert.equal(count.opened, 2, "resumed once, still one watch");
      await put(store, "n3", "op-3");
      await until("records flow again", () => seen.every((s) => s.at(-1) === "n3"));

      stops[0]?.abort();
      stops[1]?.abort();
      await put(store, "n4", "op-4");
      await until("the last consumer still follows", () => seen[2]?.at(-1) === "n4");
      assert.equal(seen[0]?.includes("n4"), false, "a consumer that left is not told");
      assert.equal(count.open, 1);
      stops[2]?.abort();
      await until("the watch ends with its last consumer", () => count.open === 0);

      // A consumer coming later starts a watch of its own.
      const late = new AbortController();
      const lateSeen: string[] = [];
      await watchOperations({
        store,
        signal: late.signal,
        logger: silentLogger,
        onRecord: (r) => lateSeen.push(r.nodeId),
        onResync: () => {},
      }).ready;
      assert.equal(count.opened, 3);
      await put(store, "n5", "op-5");
      await until("the new watch feeds it", () => lateSeen.includes("n5"));
      late.abort();
      await until("and ends with it", () => count.open === 0);
    } finally {
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lets a consumer be ready only once the watch is up, and starts none for a consumer already gone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-opwatch-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const { store, count, revision } = countingStore(real);
    const follow = (signal: AbortSignal, got: string[] = []) =>
      watchOperations({
        store,
        signal,
        logger: silentLogger,
        onRecord: (r) => got.push(r.nodeId),
        onResync: () => {},
      });
    const settled = async (p: Promise<void>) =>
      Promise.race([p.then(() => true), sleep(100).then(() => false)]);
    try {
      // Gone before it came: no watch, and none kept alive by it.
      await follow(AbortSignal.abort()).ready;
      await put(store, "n0", "op-0");
      await sleep(50);
      assert.equal(count.opened, 0, "no watch for a consumer already gone");

      // A consumer joining while the watch is starting is ready with it, not before.
      revision.hold();
      const first = new AbortController();
      const second = new AbortController();
      const got: string[] = [];
      const a = follow(first.signal).ready;
      const b = follow(second.signal, got).ready;
      assert.equal(await settled(b), false, "not ready while the watch is not up");
      revision.release();
      await Promise.all([a, b]);
      await put(store, "n1", "op-1");
      await until("the second consumer is fed", () => got.includes("n1"));
      assert.equal(count.opened, 1);
      first.abort();
      second.abort();
      await until("the watch ends", () => count.open === 0);

      // A watch stopped before it was up still lets its consumer's start-up go on.
      revision.hold();
      const brief = new AbortController();
      const ready = follow(brief.signal).ready;
      brief.abort();
      revision.release();
      assert.equal(await settled(ready), true, "ready once the watch has stopped");
    } finally {
      revision.release();
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
