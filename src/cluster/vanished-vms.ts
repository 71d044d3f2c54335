/**
 * Records a node's reports wrote on its word alone (unmanaged, no tenant,
 * no labels, no spec, no stale copies elsewhere, not awaiting a create's
 * report, placed on that node) go when the node is removed. Such a record
 * otherwise stays for good (only a DeleteVm removes one): an id a node
 * reported once, `web-1`, stays taken, and every tenant's CreateVm of it is
 * refused VM_EXISTS (an adversarial review with a stolen node certificate,
 * 8 December 2026); removing the node is the remedy for a stolen
 * certificate. They are not deleted when a report stops listing them: that
 * record is what keeps a tenant from creating over a VM no tenant holds
 * while its node does not list it for a moment, and being handed it when
 * the node lists it again (test/tenancy-boundaries.test.ts; a first version
 * that deleted them with the report was withdrawn on that).
 */
import { type Logger, sameNode } from "../core/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { type Compare, type KvStore, MAX_TXN_OPS } from "../store/index.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import type { VmRecords } from "./vm-records.js";

/** Records deleted in one transaction (each: its compare, the lock's compare, the delete). */
const PER_TXN = Math.floor((MAX_TXN_OPS - 1) / 3);

/** Whether `rec` is `nodeId`'s word alone: placed there by its report, nobody else's. */
export function wordAlone(rec: VmRecord, nodeId: string): boolean {
  return (
    sameNode(rec.nodeId, nodeId) &&
    !rec.managed &&
    rec.tenant === "" &&
    Object.keys(rec.labels).length === 0 &&
    rec.spec === undefined &&
    rec.staleCopies.length === 0 &&
    !rec.awaitingReport
  );
}

/** Every record that is `nodeId`'s word alone (the node is removed). */
export async function recordsOnWordAlone(
  nodeId: string,
  vmRecords: VmRecords,
): Promise<{ id: string; rev: number }[]> {
  return (await vmRecords.where((rec) => wordAlone(rec, nodeId))).map((v) => ({
    id: v.rec.id,
    rev: v.rev,
  }));
}

/**
 * Deletes `records`, each only while still at its revision, while no
 * migration or failover holds its VM and while `unchanged` holds (the
 * node's record still absent: not registered again meanwhile). A batch that fails a compare is
 * tried again one record at a time, so one VM that changed keeps only itself.
 * Resolves with the ids deleted; never throws (logged): a record not deleted
 * stays, as before.
 */
export async function dropVanished(
  store: KvStore,
  vmRecords: VmRecords,
  records: readonly { id: string; rev: number }[],
  unchanged: Compare | undefined,
  logger: Logger | undefined,
  signal?: AbortSignal,
): Promise<string[]> {
  const gone: string[] = [];
  const drop = async (batch: readonly { id: string; rev: number }[]) => {
    const ops = batch.map((r) => vmRecords.drop(r.id, r.rev));
    const txn = await store.txn(
      {
        compares: [
          ...(unchanged === undefined ? [] : [unchanged]),
          ...ops.map((o) => o.compare),
          ...batch.map((r) => ({ key: MIGRATION_LOCKS + r.id, modRevision: 0 })),
        ],
        success: ops.map((o) => o.op),
      },
      { signal },
    );
    if (!txn.succeeded) return false;
    for (const r of batch) {
      vmRecords.forget(r.id, txn.revision);
      gone.push(r.id);
    }
    return true;
  };
  try {
    for (let i = 0; i < records.length; i += PER_TXN) {
      const batch = records.slice(i, i + PER_TXN);
      if (!(await drop(batch)) && batch.length > 1) for (const r of batch) await drop([r]);
    }
  } catch (err) {
    logger?.warn({ err }, "records of a removed node's VMs not deleted; they stay");
  }
  return gone;
}
