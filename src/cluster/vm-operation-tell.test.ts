import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import { type VmOperation, VmOperationKind, VmOperationState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, getMessage, type KvStore } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { startVmOperationSettler } from "./vm-operation-settler.js";
import { TELLING_PREFIX } from "./vm-operation-tell.js";
import { createVmOperations, VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import type { VmRecords } from "./vm-records.js";

/**
 * The audit trail loses no lifecycle outcome: a settle marked its index
 * entry settled and then told the outcome, so a process killed between the
 * two (in the 1 s pause after a timed-out settle whose write had applied),
 * or whose trail refused the record, left an operation settled and never
 * audited, with nothing to tell it later.
 */
describe("a settled operation's outcome left untold", () => {
  const testStore = () =>
    createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-untold-")), "state.db"),
      logger: silentLogger,
    });

  /** A start on n1, finished FAILED on its node. */
  async function finishedStart(store: KvStore, id: string): Promise<void> {
    await createVmOperations(store, systemClock).submit({
      ...{ id, kind: VmOperationKind.START, vmId: "vm1", nodeId: "n1", tenant: "t1" },
      ...{ params: {}, requestedBy: "admin", requestId: "", vm: undefined, vmRevision: 0 },
      generation: 0n,
    });
    const result = create(OperationResultSchema, {
      operationId: id,
      outcome: OperationOutcome.FAILED,
      reason: "VM_NOT_FOUND",
    });
    assert.ok(await createAgentOperations(store, systemClock).finish("n1", result));
  }

  const markers = async (store: KvStore) =>
    (await store.range(TELLING_PREFIX, { limit: 100 })).kvs.map((kv) => kv.key);

  const indexOf = async (store: KvStore, id: string) =>
    (await getMessage(store, VmOperationIndexSchema, VM_OPERATIONS_PREFIX + id))?.message;

  /** Waits (bounded, ~15 s) until `done()` holds. */
  async function until(what: string, done: () => Promise<boolean> | boolean): Promise<void> {
    for (let i = 0; i < 750; i++) {
      if (await done()) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail(`${what}: not within 15 s`);
  }

  /** A settler over `store` until `stop` aborts, telling through `onSettled`. */
  const settler = (
    store: KvStore,
    stop: AbortController,
    onSettled: (op: VmOperation, tenant: string) => Promise<void> | void,
    tellScanMs = 100,
  ) =>
    startVmOperationSettler({
      store,
      vmRecords: { forget: () => {} } as unknown as VmRecords,
      logger: silentLogger,
      signal: stop.signal,
      onSettled,
      tellScanMs,
    }).ready;

  for (const how of ["its trail refused the record", "its process died while telling"]) {
    it(`is told once by a scan when ${how}, however many processes scan`, async () => {
      const store = testStore();
      const first = new AbortController();
      const later = new AbortController();
      try {
        await finishedStart(store, "op-1");
        let asked = 0;
        await settler(store, first, () => {
          asked++;
          // Refused, or never answered (the process is gone before the trail wrote).
          return how.includes("refused")
            ? Promise.reject(new Error("audit trail refused the record"))
            : new Promise<void>(() => {});
        });
        await until("settled", async () => (await indexOf(store, "op-1"))?.settled === true);
        await until("asked to tell", () => asked === 1);
        first.abort();
        assert.equal((await indexOf(store, "op-1"))?.telling, true);

        // Two processes come up and scan at once: one of them tells it, once.
        const told: [string, string, VmOperationState][] = [];
        const tell = (op: VmOperation, tenant: string) => {
          told.push([op.id, tenant, op.state]);
        };
        await Promise.all([settler(store, later, tell), settler(store, later, tell)]);
        await until("told", async () => (await indexOf(store, "op-1"))?.telling === false);
        // Past a few more scans: told once, by one of them.
        await new Promise((r) => setTimeout(r, 500));
        assert.deepEqual(told, [["op-1", "t1", VmOperationState.FAILED]]);
        assert.equal((await indexOf(store, "op-1"))?.settled, true);
        assert.deepEqual(await markers(store), []);
      } finally {
        first.abort();
        later.abort();
        await store.close();
      }
    });
  }

  it("is told by its own process's next scans when its trail refused it once, without a restart", async () => {
    const store = testStore();
    const stop = new AbortController();
    try {
      await finishedStart(store, "op-3");
      const asked: string[] = [];
      await settler(store, stop, (op) => {
        asked.push(op.id);
        if (asked.length === 1) throw new Error("audit trail full");
      });
      await until("told", async () => (await indexOf(store, "op-3"))?.telling === false);
      assert.deepEqual(asked, ["op-3", "op-3"]);
      assert.deepEqual(await markers(store), []);
    } finally {
      stop.abort();
      await store.close();
    }
  });

  it("is told when a marker sorting before it cannot be read (one bad entry holds no other)", async () => {
    const store = testStore();
    const first = new AbortController();
    const later = new AbortController();
    try {
      // An undecodable entry (a bad write, a disk fault) under a marker that sorts first.
      await store.put(`${VM_OPERATIONS_PREFIX}a-bad`, new Uint8Array([0xff, 0xff, 0xff]));
      await store.put(`${TELLING_PREFIX}a-bad`, new Uint8Array(0));
      await finishedStart(store, "op-4");
      await settler(store, first, () => Promise.reject(new Error("audit trail refused")), 60_000);
      await until("settled", async () => (await indexOf(store, "op-4"))?.telling === true);
      first.abort();
      const told: string[] = [];
      await settler(store, later, (op) => void told.push(op.id));
      await until("told", async () => (await indexOf(store, "op-4"))?.telling === false);
      assert.deepEqual(told, ["op-4"]);
    } finally {
      first.abort();
      later.abort();
      await store.close();
    }
  });

  it("is left to its own settle while that settle tells it (a scan meanwhile waits)", async () => {
    const store = testStore();
    const stop = new AbortController();
    try {
      await finishedStart(store, "op-2");
      const told: string[] = [];
      let release = () => {};
      const slowTrail = new Promise<void>((r) => {
        release = r;
      });
      // The first settler's trail takes its time; a second process sweeps meanwhile.
      // (Its own scans too far apart to matter here.)
      await settler(
        store,
        stop,
        async (op) => {
          await slowTrail;
          told.push(`first ${op.id}`);
        },
        60_000,
      );
      await until("settled", async () => (await indexOf(store, "op-2"))?.telling === true);
      // Its scan at 1 s finds the outcome being told; the trail answers at 1.5 s.
      await settler(store, stop, (op) => void told.push(`second ${op.id}`), 1000);
      await new Promise((r) => setTimeout(r, 1500));
      release();
      await until("marked told", async () => (await indexOf(store, "op-2"))?.telling === false);
      // Past the second process's next scans: it found nothing left to tell.
      await new Promise((r) => setTimeout(r, 2200));
      assert.deepEqual(told, ["first op-2"]);
    } finally {
      stop.abort();
      await store.close();
    }
  });
});
