import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { type NodeId, NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { createCasBatch } from "./cas-batch.js";
import type { KvStore } from "./kv-store.js";
import { createSqliteStore } from "./sqlite-store.js";
import { encodeMessage, getMessage, type Versioned } from "./typed-store.js";

/** A SQLite store that counts its txns and reads. */
function countingStore(): { store: KvStore; txns: () => number; reads: () => number } {
  const inner = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-cas-batch-")), "s.db"),
    logger: silentLogger,
  });
  let txns = 0;
  let reads = 0;
  const store: KvStore = Object.create(inner);
  store.txn = (req, opts) => {
    txns += 1;
    return inner.txn(req, opts);
  };
  store.get = (key, opts) => {
    reads += 1;
    return inner.get(key, opts);
  };
  return { store, txns: () => txns, reads: () => reads };
}

async function seed(store: KvStore, n: number): Promise<Versioned<NodeId>[]> {
  const out: Versioned<NodeId>[] = [];
  for (let i = 0; i < n; i++) {
    const message = create(NodeIdSchema, { id: `v${i}` });
    const modRevision = await store.put(`k/${i}`, encodeMessage(NodeIdSchema, message));
    out.push({ message, modRevision });
  }
  return out;
}

const append =
  (s: string) =>
  (cur: NodeId | undefined): NodeId | undefined =>
    cur === undefined ? undefined : create(NodeIdSchema, { id: `${cur.id}+${s}` });

const value = async (store: KvStore, key: string) =>
  (await getMessage(store, NodeIdSchema, key))?.message.id;

describe("compare-and-swap batch", () => {
  it("writes the updates of one turn in one txn, without reading", async () => {
    const { store, txns, reads } = countingStore();
    try {
      const known = await seed(store, 10);
      const batch = createCasBatch(store);
      const done = await Promise.all(
        known.map((k, i) => batch.update(NodeIdSchema, `k/${i}`, k, append("x"))),
      );
      assert.equal(txns(), 1);
      assert.equal(reads(), 0);
      assert.ok(done.every((d) => d.written && d.modRevision === done[0]?.modRevision));
      for (let i = 0; i < 10; i++) assert.equal(await value(store, `k/${i}`), `v${i}+x`);
    } finally {
      await store.close();
    }
  });

  it("never writes over a change made since the version in hand: that key is read and changed again", async () => {
    const { store, txns, reads } = countingStore();
    try {
      const known = await seed(store, 16);
      // Another writer changes two keys after their versions were taken.
      await store.put("k/3", encodeMessage(NodeIdSchema, { id: "other3" }));
      await store.put("k/12", encodeMessage(NodeIdSchema, { id: "other12" }));
      const batch = createCasBatch(store);
      const done = await Promise.all(
        known.map((k, i) => batch.update(NodeIdSchema, `k/${i}`, k, append("x"))),
      );
      const calls = txns() + reads();
      assert.ok(done.every((d) => d.written));
      for (let i = 0; i < 16; i++)
        assert.equal(await value(store, `k/${i}`), i === 3 || i === 12 ? `other${i}+x` : `v${i}+x`);
      // Halved down to the stale keys: fewer calls than a read and a txn per key.
      assert.ok(calls < 2 * 16, `${calls} calls`);
    } finally {
      await store.close();
    }
  });

  it("splits a large turn within the txn limit, and a key queued twice gets both changes", async () => {
    const { store, txns, reads } = countingStore();
    try {
      const known = await seed(store, 100);
      const batch = createCasBatch(store);
      const first = known[0] as Versioned<NodeId>;
      const done = await Promise.all([
        ...known.map((k, i) => batch.update(NodeIdSchema, `k/${i}`, k, append("x"))),
        batch.update(NodeIdSchema, "k/0", first, append("y")),
      ]);
      const calls = txns() + reads();
      assert.ok(done.every((d) => d.written));
      for (let i = 1; i < 100; i++) assert.equal(await value(store, `k/${i}`), `v${i}+x`);
      const zero = await value(store, "k/0");
      assert.ok(zero === "v0+x+y" || zero === "v0+y+x", zero);
      assert.ok(calls < 2 * 101, `${calls} calls`);
    } finally {
      await store.close();
    }
  });

  it("writes nothing for a change declined on the version in hand, and a gone key is not recreated", async () => {
    const { store, txns } = countingStore();
    try {
      const [k0, k1] = await seed(store, 2);
      const batch = createCasBatch(store);
      const declined = await batch.update(
        NodeIdSchema,
        "k/0",
        k0 as Versioned<NodeId>,
        () => undefined,
      );
      assert.equal(declined.written, false);
      await store.delete("k/1");
      const gone = await batch.update(NodeIdSchema, "k/1", k1 as Versioned<NodeId>, append("x"));
      assert.equal(gone.written, false);
      assert.equal(await value(store, "k/1"), undefined);
      assert.equal(txns(), 1);
    } finally {
      await store.close();
    }
  });
});
