import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RpcError, silentLogger, systemClock } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import { VmOperationKind, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, getMessage, type KvStore } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { createHolder } from "./create-reservations.js";
import { createMigrationRecords } from "./migration-records.js";
import { startVmOperationSettler } from "./vm-operation-settler.js";
import { createVmOperations, VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import type { VmRecords } from "./vm-records.js";

/**
 * Creates on one node that finish together each release their capacity from
 * the same reservations key, so their settles' transactions lose to each
 * other; two daemons settle every one at once. A settle that lost was left
 * for the next resync: the chaos test (seed 42) saw a create's reservation
 * held for good ("reservation leaked: reservations/node-c: create:…"), and
 * its outcome was not audited meanwhile.
 */
describe("creates on one node finishing together", () => {
  it("are each settled and release their reservation, with two settlers at once", async () => {
    await settleTogether(8, 2);
  });

  // More creates than a settle's attempts: each round one settle of the node wins, so with
  // every settle of the node under way at once, those after the 16th lost 16 times and were
  // left for a resync that a healthy watch never has (34 of 50 held for good; an adversarial
  // review). A settler now settles one node's operations one after another.
  it("are each settled when they outnumber a settle's attempts, with three settlers at once", async () => {
    await settleTogether(50, 3);
  });

  // A store that fails a settle's call once (etcd's leader changed, a call timed out) while
  // the operations watch lives on: the settle was given up at once and left for a resync
  // the healthy watch never has, its reservation held for good (an adversarial review).
  it("are settled when the store fails a settle's write once", async () => {
    await settleTogether(1, 1, 1);
  });

  // A settle's write that the store applied before its call failed (an etcd call that timed
  // out after its leader committed it): the retry found the operation settled, took it for
  // another settler's, and the outcome was never audited (noted in docs/cluster.md).
  it("are audited once when the store applied a settle's write but failed its call", async () => {
    await settleTogether(1, 1, 1, "after");
  });

  it("are audited once each when that happens with two settlers at once", async () => {
    await settleTogether(8, 2, 3, "after");
  });
});

/**
 * `N` creates on one node finished at once under `settlers` settlers, the
 * first `storeFailures` settle writes failed by the store (`when`: before
 * it applies them, or after): each settled and told once.
 */
async function settleTogether(
  N: number,
  settlers: number,
  storeFailures = 0,
  when: "before" | "after" = "before",
): Promise<void> {
  const raw = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-create-settle-")), "state.db"),
    logger: silentLogger,
  });
  const faults = { settleWrites: 0 };
  const store: KvStore = Object.create(raw);
  store.txn = async (req, o) => {
    if (
      faults.settleWrites > 0 &&
      req.success.some((op) => op.key.startsWith(VM_OPERATIONS_PREFIX))
    ) {
      faults.settleWrites--;
      if (when === "after") await raw.txn(req, o);
      throw new RpcError("STORE_UNAVAILABLE");
    }
    return raw.txn(req, o);
  };
  const stop = new AbortController();
  try {
    const ops = createVmOperations(store, systemClock);
    const migrations = createMigrationRecords(store);
    const ids = Array.from({ length: N }, (_, i) => `op-create-${i}`);
    for (const [i, id] of ids.entries()) {
      const reserved = await migrations.reserved();
      const hold = await migrations.hold(
        "n1",
        { id: createHolder(id), vcpus: 1, memoryBytes: 1n << 28n },
        reserved.revisions.get("n1") ?? 0,
      );
      assert.ok(hold !== undefined);
      const vm = create(VmRecordSchema, {
        id: `vm-${i}`,
        nodeId: "n1",
        generation: 1n,
        managed: true,
        desiredState: VmState.RUNNING,
        lastOperationId: id,
      });
      await ops.submit({
        ...{ id, kind: VmOperationKind.CREATE, vmId: `vm-${i}`, nodeId: "n1", tenant: "" },
        ...{ params: {}, requestedBy: "admin", requestId: "", vm, vmRevision: 0 },
        ...{ generation: 1n, also: [hold] },
      });
    }
    assert.equal((await migrations.reserved()).holders.get("n1")?.size, N);
    const settledOnce: string[] = [];
    for (let d = 0; d < settlers; d++)
      await startVmOperationSettler({
        store,
        vmRecords: { forget: () => {} } as unknown as VmRecords,
        logger: silentLogger,
        signal: stop.signal,
        onSettled: (op) => {
          settledOnce.push(op.id);
        },
      }).ready;
    faults.settleWrites = storeFailures;
    const agentOps = createAgentOperations(store, systemClock);
    await Promise.all(
      ids.map((operationId) =>
        agentOps.finish(
          "n1",
          create(OperationResultSchema, { operationId, outcome: OperationOutcome.SUCCEEDED }),
        ),
      ),
    );
    // Bounded at ~15 s (a loaded machine); ends as soon as every create is settled.
    let unsettled = ids;
    // Told too: a settle whose failed call was applied is retried after a pause.
    for (let i = 0; i < 750 && (unsettled.length > 0 || settledOnce.length < N); i++) {
      await new Promise((r) => setTimeout(r, 20));
      const left: string[] = [];
      for (const id of unsettled) {
        const index = await getMessage(store, VmOperationIndexSchema, VM_OPERATIONS_PREFIX + id);
        if (index?.message.settled !== true) left.push(id);
      }
      unsettled = left;
    }
    assert.deepEqual(unsettled, [], "creates never settled");
    // Nothing told twice: past the retry's pause, every settle has ended.
    if (storeFailures > 0) await new Promise((r) => setTimeout(r, 1500));
    const held = [...((await migrations.reserved()).holders.get("n1") ?? [])];
    assert.deepEqual(held, [], "reservations left held");
    assert.deepEqual(settledOnce.sort(), [...ids].sort(), "each outcome told once");
    assert.equal(faults.settleWrites, 0, "the store's failures were met");
  } finally {
    stop.abort();
    await raw.close();
  }
}
