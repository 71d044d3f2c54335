/**
 * Records a node's report leaves behind: of VMs its last stored report
 * listed and the new one does not, the records written on a node's word
 * alone and nobody else's (unmanaged, no tenant, no labels, no spec, no
 * stale copies elsewhere, not awaiting a create's report, placed on that
 * node) are deleted once the new report is stored, and all of a node's
 * such records when the node is removed. Such a record used to stay for
 * good (only a DeleteVm removed one): an id a node reported once, `web-1`,
 * stayed taken, and every tenant's CreateVm of it was refused VM_EXISTS
 * (an adversarial review with a stolen node certificate, 8 December 2026).
 * The VM, should a node report it again, is claimed anew under a first
 * generation above any the id had.
 */
import { type Logger, sameNode } from "../core/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
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

/** The ids of `before` that `now` no longer lists whose records are `nodeId`'s word alone. */
export async function vanishedRecords(
  nodeId: string,
  before: readonly VmInfo[] | undefined,
  now: readonly VmInfo[],
  vmRecords: VmRecords,
): Promise<{ id: string; rev: number }[]> {
  if (before === undefined || before.length === 0) return [];
  const listed = new Set(now.map((vm) => vm.id));
  const facts = await vmRecords.all();
  return before.flatMap((vm) => {
    if (listed.has(vm.id)) return [];
    const fact = facts.get(vm.id);
    return fact !== undefined && wordAlone(fact.rec, nodeId) ? [{ id: vm.id, rev: fact.rev }] : [];
  });
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
 * migration or failover holds its VM (a migration's source stops listing the
 * VM before the placement moves) and while `unchanged` holds (the node's
 * record as the report that left them wrote it: a newer report of the node,
 * stored meanwhile, may list them again). A batch that fails a compare is
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
    logger?.warn({ err }, "records of VMs no node lists any more not deleted; they stay");
  }
  return gone;
}
