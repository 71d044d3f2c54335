// A key updated twice in one turn of a compare-and-swap batch gets both
// changes in the order asked, on SQLite and on etcd. Found by an adversarial
// review: the batch's txns were sent at once, and on etcd the later, smaller
// one usually committed first.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../src/core/index.js";
import { type NodeId, NodeIdSchema } from "../src/gen/debvisor/v1/common_pb.js";
import {
  createCasBatch,
  createEtcdStore,
  createSqliteStore,
  encodeMessage,
  getMessage,
  type KvStore,
} from "../src/store/index.js";
import { startEtcd } from "./helpers/etcd-server.js";

const append = (s: string) => (c: NodeId | undefined) =>
  c === undefined ? undefined : create(NodeIdSchema, { id: `${c.id}+${s}` });

async function inOrder(store: KvStore): Promise<Record<string, number>> {
  const batch = createCasBatch(store);
  const outcomes: Record<string, number> = {};
  const put = async (key: string, id: string) => {
    const message = create(NodeIdSchema, { id });
    return { message, modRevision: await store.put(key, encodeMessage(NodeIdSchema, message)) };
  };
  for (let round = 0; round < 10; round++) {
    const key = `k/${round}`;
    const known = await put(key, "v");
    // Other keys in the first txn, as a burst of deliveries would have.
    const others = await Promise.all(
      Array.from({ length: 20 }, (_, j) => put(`o/${round}/${j}`, "o")),
    );
    await Promise.all([
      ...others.map((o, j) => batch.update(NodeIdSchema, `o/${round}/${j}`, o, append("x"))),
      batch.update(NodeIdSchema, key, known, append("1")),
      batch.update(NodeIdSchema, key, known, append("2")),
    ]);
    const got = (await getMessage(store, NodeIdSchema, key))?.message.id ?? "";
    outcomes[got] = (outcomes[got] ?? 0) + 1;
  }
  return outcomes;
}

describe("compare-and-swap batch: one key twice in one turn", async () => {
  it("SQLite: both changes, in the order asked", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-cas-order-")), "s.db"),
      logger: silentLogger,
    });
    try {
      assert.deepEqual(await inOrder(store), { "v+1+2": 10 });
    } finally {
      await store.close();
    }
  });

  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  after(() => etcd.stop());
  it("etcd: both changes, in the order asked", async () => {
    const store = createEtcdStore({ endpoints: [etcd.endpoint], prefix: "/cas-order/" });
    try {
      assert.deepEqual(await inOrder(store), { "v+1+2": 10 });
    } finally {
      await store.close();
    }
  });
});
