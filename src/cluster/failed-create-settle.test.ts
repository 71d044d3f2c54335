import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import { VmOperationKind, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, getMessage, type KvStore } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { startVmOperationSettler } from "./vm-operation-settler.js";
import { createVmOperations, VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import { placementChange, readPlacement } from "./vm-placement.js";
import type { VmRecords } from "./vm-records.js";

/**
 * `hvctl vm create cf --node n1` then at once `hvctl vm start cf`: the start
 * is accepted (it rewrites the record's last operation) while the create
 * is still waiting on n1, and then the create fails there. The settler
 * kept the record, because it was no longer the create's last write: the
 * VM existed nowhere, yet its id stayed taken (VM_EXISTS) for good.
 */
describe("a create that failed after another call on its VM", () => {
  async function run(placedAgain: boolean, started = true): Promise<boolean> {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-failed-create-")), "state.db"),
      logger: silentLogger,
    });
    const stop = new AbortController();
    try {
      const ops = createVmOperations(store, systemClock);
      const rec = (lastOperationId: string, desiredState: VmState) =>
        create(VmRecordSchema, {
          id: "cf",
          nodeId: "n1",
          generation: 5n,
          managed: true,
          desiredState,
          lastOperationId,
        });
      const write = (
        id: string,
        kind: VmOperationKind,
        vm: ReturnType<typeof rec>,
        vmRevision: number,
      ) =>
        ops.submit({
          ...{ id, kind, vmId: "cf", nodeId: "n1", tenant: "", params: {} },
          ...{ requestedBy: "admin", requestId: "", vm, vmRevision, generation: 5n },
        });
      const created = await write(
        "op-create",
        VmOperationKind.CREATE,
        rec("op-create", VmState.STOPPED),
        0,
      );
      if (started)
        await write(
          "op-start",
          VmOperationKind.START,
          rec("op-start", VmState.RUNNING),
          created.revision,
        );
      if (placedAgain) {
        const moved = placementChange("cf", await readPlacement(store, "cf"), "n2");
        assert.ok((await store.txn({ compares: [moved.compare], success: [moved.op] })).succeeded);
      }
      assert.ok(
        await createAgentOperations(store, systemClock).finish(
          "n1",
          create(OperationResultSchema, {
            operationId: "op-create",
            outcome: OperationOutcome.FAILED,
            reason: "DATASET_EXISTS",
          }),
        ),
      );
      await startVmOperationSettler({
        store,
        vmRecords: { forget: () => {} } as unknown as VmRecords,
        logger: silentLogger,
        signal: stop.signal,
        onSettled: () => {},
      }).ready;
      await settled(store, "op-create");
      return (await getMessage(store, VmRecordSchema, "vms/cf")) !== undefined;
    } finally {
      stop.abort();
      await store.close();
    }
  }

  it("removes the record it wrote, so the id is free again", async () => {
    assert.equal(await run(false), false);
  });

  it("keeps it when the VM was placed anew since (a failover or migration)", async () => {
    assert.equal(await run(true), true);
  });

  it("keeps it when placed anew even if the create wrote it last (ended by a node's removal)", async () => {
    assert.equal(await run(true, false), true);
  });
});

async function settled(store: KvStore, id: string): Promise<void> {
  // Bounded at ~15 s (a loaded machine); it ends as soon as the operation is settled.
  for (let i = 0; i < 750; i++) {
    const index = await getMessage(store, VmOperationIndexSchema, `${VM_OPERATIONS_PREFIX}${id}`);
    if (index?.message.settled) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`${id} not settled`);
}
