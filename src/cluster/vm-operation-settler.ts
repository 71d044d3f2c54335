import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Logger, sameNode } from "../core/index.js";
import { createVmLanes } from "../drivers/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { type VmOperation, VmOperationKind, VmOperationState } from "../gen/debvisor/v1/vm_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  LOST,
  rangeAll,
  retryWhileLost,
  type TxnOp,
} from "../store/index.js";
import { watchOperationsWithSweep } from "./agent-operation-watch.js";
import { operationKey, waitingGuardKey } from "./agent-operations.js";
import { createHolder } from "./create-reservations.js";
import { createMigrationRecords } from "./migration-records.js";
import { VM_OPERATIONS_PREFIX, vmOperationOf } from "./vm-operations.js";
import type { VmRecords } from "./vm-records.js";

/** Settles tried per finished operation while their txn loses a race (each round one wins). */
const SETTLE_ATTEMPTS = 16;
/** What a settle that lost every round ends with: not ended. */
const notEnded = () => false;
/** The pause before a settle whose store call failed is tried again. */
const STORE_RETRY_PAUSE_MS = 1000;

/** Options of {@link startVmOperationSettler}. */
export interface VmOperationSettlerOptions {
  readonly store: KvStore;
  readonly vmRecords: VmRecords;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Told once per finished operation, cluster-wide (for the audit trail). */
  readonly onSettled: (operation: VmOperation, tenant: string) => void;
}

/**
 * Settles finished lifecycle operations exactly once across control-plane
 * processes (a compare-and-swap marks the index entry settled): the outcome
 * goes to `onSettled` (the audit trail), a successful delete (or one its
 * node answers VM_NOT_FOUND) removes the VM's record, and a failed create
 * removes the record it had written, so the id is free again and nothing is
 * shown that no node holds. A create
 * releases the capacity it reserved on its node.
 */
export function startVmOperationSettler(options: VmOperationSettlerOptions): {
  ready: Promise<void>;
} {
  const { store, logger, signal } = options;
  const migrations = createMigrationRecords(store);

  /**
   * Settles `record` if it is a finished lifecycle operation; false when its txn lost a race.
   * `token` is the same in every round of one settle.
   */
  async function settle(record: OperationRecord, token: string): Promise<boolean> {
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
      if (index.settledBy === token) options.onSettled(op, index.tenant);
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
    const ops: TxnOp[] = [
      {
        type: "put",
        key,
        value: encodeMessage(
          VmOperationIndexSchema,
          create(VmOperationIndexSchema, { ...index, settled: true, settledBy: token }),
        ),
      },
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
    options.onSettled(op, index.tenant);
    return true;
  }
  const lanes = createVmLanes();
  /**
   * One node's settles one after another (a lane per node, as the agent keeps per VM): its
   * creates each release from its one reservations key, so settles under way together lose
   * to each other, one winning per round. More of them at once than the attempts (50 creates
   * finishing together on one node) left all after the 16th unsettled, their reservations
   * held for good. In a lane, a round loses only to another daemon's settle.
   */
  const run = (record: OperationRecord) =>
    record.phase === OperationPhase.DONE
      ? lanes.run(record.nodeId, () => attempt(record))
      : Promise.resolve();
  /**
   * Settles `record`, again while its txn loses a race. A finished operation's record sees
   * no further event: a settle given up was left until the next resync, its create's
   * reservation held and its outcome unaudited meanwhile (creates finishing together on one
   * node each release from the same reservations key, in both daemons at once).
   */
  const attempt = async (record: OperationRecord) => {
    const token = randomUUID();
    // A process that is stopping ends its rounds too, and does not warn.
    const ended = await retryWhileLost<boolean>(
      SETTLE_ATTEMPTS,
      async () => {
        try {
          return (await settle(record, token)) || signal.aborted || LOST;
        } catch (err) {
          // A store that failed a call (etcd's leader changed, a call timed out) is asked
          // again after a pause, in the same bound: the operations watch can live through
          // it, and given up, the settle waited for a resync that never came (a review).
          if (signal.aborted) return true;
          logger.warn({ err, node: record.nodeId }, "vm operation not settled; trying again");
          await sleep(STORE_RETRY_PAUSE_MS, undefined, { signal }).catch(() => {});
          return signal.aborted || LOST;
        }
      },
      notEnded,
    );
    if (!ended)
      logger.warn({ node: record.nodeId }, "vm operation not settled; the next sweep retries");
  };

  /** Finished operations not settled yet (this process was down when they finished). */
  async function sweep(): Promise<void> {
    for await (const kv of rangeAll(store, VM_OPERATIONS_PREFIX, { signal })) {
      const index = decodeMessage(VmOperationIndexSchema, kv);
      if (index.settled) continue;
      const rec = await getMessage(
        store,
        OperationRecordSchema,
        operationKey(index.nodeId, index.operationId),
        { signal },
      );
      if (rec !== undefined) await run(rec.message);
    }
  }

  return watchOperationsWithSweep({
    store,
    signal,
    logger,
    onRecord: (r) => void run(r),
    sweep,
  });
}
