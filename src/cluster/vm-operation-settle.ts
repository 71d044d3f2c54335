/**
 * One settle of a finished VM lifecycle operation (vm-operation-settler.ts
 * runs them, one node's after another, again while they lose): its index
 * entry marked settled with the settle's token, the VM's record removed
 * after a delete or a failed create, a create's reservation released, all
 * in one transaction compared against what was read; then the outcome told
 * (vm-operation-tell.ts).
 */
import { create } from "@bufbuild/protobuf";
import { sameNode } from "../core/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { VmOperationKind, VmOperationState } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage, getMessage, type TxnOp } from "../store/index.js";
import { waitingGuardKey } from "./agent-operations.js";
import { createHolder } from "./create-reservations.js";
import { createMigrationRecords } from "./migration-records.js";
import type { VmOperationSettlerOptions } from "./vm-operation-settler.js";
import type { VmOperationTell } from "./vm-operation-tell.js";
import { VM_OPERATIONS_PREFIX, vmOperationOf } from "./vm-operations.js";

/** Creates the settle of {@link VmOperationSettlerOptions}' store: `settle(record, token)`. */
export function createVmOperationSettle(
  options: Pick<VmOperationSettlerOptions, "store" | "vmRecords" | "signal">,
  told: VmOperationTell,
): (record: OperationRecord, token: string) => Promise<boolean> {
  const { store, signal } = options;
  const migrations = createMigrationRecords(store);
  /**
   * Settles `record` if it is a finished lifecycle operation; false when its txn lost a race.
   * `token` is the same in every round of one settle.
   */
  return async function settle(record: OperationRecord, token: string): Promise<boolean> {
    const id = record.dispatch?.operationId ?? "";
    if (record.phase !== OperationPhase.DONE || id === "") return true;
    const key = VM_OPERATIONS_PREFIX + id;
    const got = await getMessage(store, VmOperationIndexSchema, key, { signal });
    if (got === undefined) return true;
    const index = got.message;
    const op = vmOperationOf(index, record);
    if (index.settled) {
      // Settled by this settle's own write, whose call failed after the store applied it (a
      // timeout): its outcome is told now. Left untold, the operation was never audited.
      if (index.settledBy === token && index.telling)
        void told.tell(op, key, index, got.modRevision);
      return true;
    }
    const vmKey = `vms/${index.vmId}`;
    const vm = await getMessage(store, VmRecordSchema, vmKey, { signal });
    // A delete removes the record only while it still places the VM on the node the delete
    // ran on: one that ran on a node the VM has left since (failed over, migrated) removed a
    // stale copy there, not the VM. A record placing it nowhere (a tenant assigned to a
    // reported VM) goes as before.
    const deletedThere =
      vm !== undefined && (vm.message.nodeId === "" || sameNode(vm.message.nodeId, index.nodeId));
    // A node answering a delete with VM_NOT_FOUND holds nothing to delete: the VM went
    // behind the control plane's back (host reinstalled, undefined by hand), and keeping
    // the record would keep its id taken for good with nothing able to remove it.
    const deleted =
      op.state === VmOperationState.SUCCEEDED ||
      (op.state === VmOperationState.FAILED && op.reason === "VM_NOT_FOUND");
    // A failed create made nothing: its record goes, unless the VM was placed anew since
    // (a failover or migration bumps the generation: a create ended by a node's removal
    // after its VM was failed over elsewhere must not take the moved VM's record).
    // Operations accepted after it (a start) do not keep it: they fail on a VM no node
    // has. A create of before generations (0) goes only while it wrote the record last.
    const generation = record.dispatch?.generation ?? 0n;
    const createdNothing =
      op.state !== VmOperationState.SUCCEEDED &&
      vm?.message.generation === generation &&
      (generation > 0n || vm.message.lastOperationId === id);
    const forget =
      vm !== undefined &&
      ((index.kind === VmOperationKind.DELETE && deleted && deletedThere) ||
        (index.kind === VmOperationKind.CREATE && createdNothing));
    const settled = create(VmOperationIndexSchema, {
      ...index,
      settled: true,
      settledBy: token,
      telling: true,
    });
    const ops: TxnOp[] = [
      { type: "put", key, value: encodeMessage(VmOperationIndexSchema, settled) },
      told.marker(id),
    ];
    // The VM's guard of operations waiting for its node goes with it (one key per VM that ever
    // waited; vm-operation-submitter.ts), or it would stay for good.
    if (forget)
      ops.push(
        { type: "delete", key: vmKey },
        { type: "delete", key: waitingGuardKey(index.nodeId, index.vmId) },
      );
    // A create's capacity reservation ends with it: a created VM is counted from its record
    // until its node reports it (see unreportedCreates), a failed one not at all.
    const release =
      index.kind === VmOperationKind.CREATE
        ? await migrations.release(index.nodeId, createHolder(id), signal)
        : undefined;
    if (release !== undefined) ops.push(release.op);
    const txn = await store.txn(
      {
        compares: [
          { key, modRevision: got.modRevision },
          ...(forget && vm !== undefined ? [{ key: vmKey, modRevision: vm.modRevision }] : []),
          ...(release === undefined ? [] : [release.compare]),
        ],
        success: ops,
      },
      { signal },
    );
    // Another process settled it, the VM's record changed, or another create's release on
    // the same node changed its reservations: read again and retry (run).
    if (!txn.succeeded) return false;
    if (forget) options.vmRecords.forget(index.vmId, txn.revision);
    // Not awaited: a trail that is slow holds neither this node's next settle nor a sweep (the
    // start-up's readiness); left untold (this process stops first), a scan tells it.
    void told.tell(op, key, settled, txn.revision);
    return true;
  };
}
