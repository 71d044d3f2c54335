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
import { VmOperationKind } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage, type KvStore } from "../store/index.js";
import { createAgentOperations, waitingGuardKey } from "./agent-operations.js";
import { startVmOperationSettler } from "./vm-operation-settler.js";
import { createVmOperations, VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import { placementChange, readPlacement } from "./vm-placement.js";
import type { VmRecords } from "./vm-records.js";

/** Starts the settler and waits until it settled `op-delete`. */
async function settled(store: KvStore, signal: AbortSignal): Promise<void> {
  const settler = startVmOperationSettler({
    store,
    vmRecords: { forget: () => {} } as unknown as VmRecords,
    logger: silentLogger,
    signal,
    onSettled: () => {},
  });
  await settler.ready;
  const read = () => getMessage(store, VmOperationIndexSchema, `${VM_OPERATIONS_PREFIX}op-delete`);
  // Bounded at ~10 s (not 2 s): on a loaded machine the settler's watch can take seconds.
  for (let i = 0; i < 500 && (await read())?.message.settled !== true; i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.equal((await read())?.message.settled, true, "the delete is settled");
}

/**
 * `hvctl vm delete --force` of an HA VM running on node-a under 7: the
 * delete goes to node-a carrying 7 (no compare on the VM's record: a delete
 * writes none). node-a is paused (SIGSTOP) or cut off before it runs it;
 * past the fence delay the failover controller restarts the VM on node-b
 * under 8 (node-b's recover takes the disks). node-a comes back, fences its
 * copy and runs the delete: it undefines its stopped stale copy, SUCCEEDED.
 * The settler then removed `vms/vm-1`: the VM runs on node-b with no record
 * (its tenant, spec, HA flag and desired state gone), and the operator was
 * told the VM is deleted.
 */
describe("a delete that lands on a node the VM was failed over from", () => {
  it("does not remove the record of the VM now placed on another node", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-del-fo-")), "state.db"),
      logger: silentLogger,
    });
    const stop = new AbortController();
    try {
      const vmKey = "vms/vm-1";
      await store.put(
        vmKey,
        encodeMessage(
          VmRecordSchema,
          create(VmRecordSchema, {
            id: "vm-1",
            nodeId: "node-a",
            generation: 7n,
            managed: true,
            tenant: "t1",
          }),
        ),
      );
      // The delete, as vm-lifecycle writes it: to node-a under 7, the record not rewritten.
      const ops = createVmOperations(store, systemClock);
      await ops.submit({
        id: "op-delete",
        kind: VmOperationKind.DELETE,
        vmId: "vm-1",
        nodeId: "node-a",
        tenant: "t1",
        params: { force: "true" },
        requestedBy: "admin",
        requestId: "",
        vm: undefined,
        vmRevision: 0,
        generation: 7n,
      });
      // The failover to node-b under 8, before node-a ran the delete.
      const moved = placementChange("vm-1", await readPlacement(store, "vm-1"), "node-b");
      assert.equal(moved.generation, 8n);
      assert.ok((await store.txn({ compares: [moved.compare], success: [moved.op] })).succeeded);
      // node-a, back, undefines its stale copy: the delete succeeded there.
      const agentOps = createAgentOperations(store, systemClock);
      assert.ok(
        await agentOps.finish(
          "node-a",
          create(OperationResultSchema, {
            operationId: "op-delete",
            outcome: OperationOutcome.SUCCEEDED,
          }),
        ),
      );
      await settled(store, stop.signal);
      const rec = await getMessage(store, VmRecordSchema, vmKey);
      assert.ok(rec !== undefined, "the record of the VM running on node-b is kept");
      assert.equal(rec.message.nodeId, "node-b");
      assert.equal(rec.message.generation, 8n);
    } finally {
      stop.abort();
      await store.close();
    }
  });

  it("removes the record of a VM deleted where it is placed, and its waiting-operations guard", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-del-guard-")), "state.db"),
      logger: silentLogger,
    });
    const stop = new AbortController();
    try {
      await store.put(
        "vms/vm-1",
        encodeMessage(
          VmRecordSchema,
          create(VmRecordSchema, { id: "vm-1", nodeId: "node-a", generation: 7n, managed: true }),
        ),
      );
      // Operations of vm-1 once waited for node-a while it was away.
      await store.put(waitingGuardKey("node-a", "vm-1"), new Uint8Array());
      await createVmOperations(store, systemClock).submit({
        id: "op-delete",
        kind: VmOperationKind.DELETE,
        vmId: "vm-1",
        nodeId: "node-a",
        tenant: "",
        params: {},
        requestedBy: "admin",
        requestId: "",
        vm: undefined,
        vmRevision: 0,
        generation: 7n,
      });
      await createAgentOperations(store, systemClock).finish(
        "node-a",
        create(OperationResultSchema, {
          operationId: "op-delete",
          outcome: OperationOutcome.SUCCEEDED,
        }),
      );
      await settled(store, stop.signal);
      assert.equal(await store.get("vms/vm-1"), undefined, "the record goes");
      assert.equal(
        await store.get(waitingGuardKey("node-a", "vm-1")),
        undefined,
        "its guard goes with it (one key per VM that ever waited, kept for good before)",
      );
    } finally {
      stop.abort();
      await store.close();
    }
  });
});
