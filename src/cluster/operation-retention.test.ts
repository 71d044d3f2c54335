import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import {
  OperationKind,
  OperationOutcome,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import { VmOperationKind } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage, type KvStore } from "../store/index.js";
import { createAgentOperations, OPERATIONS_PREFIX, operationKey } from "./agent-operations.js";
import { pruneOperations } from "./operation-retention.js";
import { createVmOperations, VM_OPERATIONS_PREFIX } from "./vm-operations.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function testStore(): KvStore {
  return createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-op-retention-")), "state.db"),
    logger: silentLogger,
  });
}

/** Operations written and ended at the clock's time, through the repositories the daemon uses. */
function operations(store: KvStore, clock: ReturnType<typeof createManualClock>) {
  const agentOps = createAgentOperations(store, clock);
  const vmOps = createVmOperations(store, clock);
  const end = (nodeId: string, id: string) =>
    agentOps.finish(
      nodeId,
      create(OperationResultSchema, { operationId: id, outcome: OperationOutcome.SUCCEEDED }),
    );
  return {
    vmOps,
    /** A storage operation (no lifecycle index), ended unless `open`. */
    async agentOp(id: string, open = false) {
      await agentOps.submit(
        "node-a",
        {
          operationId: id,
          kind: OperationKind.LIST_SNAPSHOTS,
          vmId: "",
          params: {},
          generation: 0n,
        },
        "test",
      );
      if (!open) assert.ok(await end("node-a", id));
    },
    /**
     * A lifecycle start with its index, ended unless `open`, settled if `settled` (its outcome
     * not yet in the audit trail if `telling`).
     */
    async lifecycleOp(
      id: string,
      o: { open?: boolean; settled?: boolean; telling?: boolean } = {},
    ) {
      await vmOps.submit({
        id,
        kind: VmOperationKind.START,
        vmId: `vm-${id}`,
        nodeId: "node-a",
        tenant: "t1",
        params: {},
        requestedBy: "admin",
        requestId: "",
        vm: undefined,
        vmRevision: 0,
        generation: 0n,
      });
      if (o.open !== true) assert.ok(await end("node-a", id));
      if (o.settled === true) {
        const key = VM_OPERATIONS_PREFIX + id;
        const index = await getMessage(store, VmOperationIndexSchema, key);
        assert.ok(index);
        await store.put(
          key,
          encodeMessage(
            VmOperationIndexSchema,
            create(VmOperationIndexSchema, {
              ...index.message,
              settled: true,
              telling: o.telling === true,
            }),
          ),
        );
      }
    },
  };
}

const keys = async (store: KvStore, prefix: string) =>
  (await store.range(prefix, { limit: 1000 })).kvs.map((kv) => kv.key.slice(prefix.length)).sort();

describe("finished operations past their retention", () => {
  it("are removed with their index once audited; open, recent, unaudited and untold ones stay", async () => {
    const store = testStore();
    const clock = createManualClock(1_000_000);
    try {
      const o = operations(store, clock);
      await o.agentOp("old-storage");
      await o.lifecycleOp("old-start", { settled: true });
      await o.lifecycleOp("old-unaudited");
      await o.lifecycleOp("old-untold", { settled: true, telling: true });
      await o.agentOp("old-open", true);
      await o.lifecycleOp("old-open-start", { open: true });
      clock.advance(DAY - HOUR);
      await o.agentOp("recent-storage");
      await o.lifecycleOp("recent-start", { settled: true });
      clock.advance(HOUR);

      assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 2);
      assert.deepEqual(await keys(store, OPERATIONS_PREFIX), [
        "node-a/old-open",
        "node-a/old-open-start",
        "node-a/old-unaudited",
        "node-a/old-untold",
        "node-a/recent-start",
        "node-a/recent-storage",
      ]);
      assert.deepEqual(await keys(store, VM_OPERATIONS_PREFIX), [
        "old-open-start",
        "old-unaudited",
        "old-untold",
        "recent-start",
      ]);
      // Gone for GetOperation, and not in flight for a migration of its VM.
      assert.equal(await o.vmOps.get("old-start"), undefined);
      assert.equal(await o.vmOps.inFlight("old-start", "node-a"), false);
      assert.equal(await o.vmOps.inFlight("old-open-start", "node-a"), true);
      // A second sweep finds nothing more until time passes.
      assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 0);
      clock.advance(DAY);
      assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 2);
      assert.deepEqual(await keys(store, OPERATIONS_PREFIX), [
        "node-a/old-open",
        "node-a/old-open-start",
        "node-a/old-unaudited",
        "node-a/old-untold",
      ]);
    } finally {
      await store.close();
    }
  });

  it("keeps one written while the sweep ran, and removes the others of its transaction", async () => {
    const store = testStore();
    const clock = createManualClock(1_000_000);
    try {
      const o = operations(store, clock);
      // More than one transaction holds: the batches are split around the changed one.
      for (let i = 0; i < 70; i++) await o.agentOp(`op-${String(i).padStart(2, "0")}`);
      clock.advance(DAY);
      const changed = operationKey("node-a", "op-40");
      let touched = false;
      const racing: KvStore = Object.assign(Object.create(store) as KvStore, {
        txn: async (...args: Parameters<KvStore["txn"]>) => {
          if (!touched) {
            // Another process rewrites op-40 after the sweep read it.
            touched = true;
            const got = await store.get(changed);
            assert.ok(got);
            await store.put(changed, got.value);
          }
          return store.txn(...args);
        },
      });
      assert.equal(await pruneOperations({ store: racing, clock, retentionMs: DAY }), 69);
      assert.deepEqual(await keys(store, OPERATIONS_PREFIX), ["node-a/op-40"]);
    } finally {
      await store.close();
    }
  });

  it("leaves one whose index cannot be decoded for an operator, and removes the others", async () => {
    const store = testStore();
    const clock = createManualClock(1_000_000);
    try {
      const o = operations(store, clock);
      for (const id of ["a-1", "b-2", "c-3"]) await o.agentOp(id);
      await store.put(`${VM_OPERATIONS_PREFIX}b-2`, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
      clock.advance(DAY);
      assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 2);
      assert.deepEqual(await keys(store, OPERATIONS_PREFIX), ["node-a/b-2"]);
    } finally {
      await store.close();
    }
  });

  it("lets the event loop go between pages, and removes every page", async () => {
    const store = testStore();
    const clock = createManualClock(1_000_000);
    try {
      const o = operations(store, clock);
      for (let i = 0; i < 2000; i++) await o.agentOp(`op-${String(i).padStart(4, "0")}`);
      // None has expired yet (the steady state): SQLite answers synchronously, so without a
      // pause between pages no timer runs until the whole range is read.
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      try {
        assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 0);
      } finally {
        clearInterval(timer);
      }
      assert.ok(ticks >= 2, `the event loop ran timers ${ticks} times during the sweep`);
      clock.advance(DAY);
      assert.equal(await pruneOperations({ store, clock, retentionMs: DAY }), 2000);
      assert.deepEqual(await keys(store, OPERATIONS_PREFIX), []);
    } finally {
      await store.close();
    }
  });
});
