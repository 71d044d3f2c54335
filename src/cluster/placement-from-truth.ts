import { create } from "@bufbuild/protobuf";
import { FailoverRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  encodeMessage,
  getMessage,
  type KvStore,
  type TxnOp,
} from "../store/index.js";
import { FAILOVER_RECORDS } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-records.js";
import { placementChange } from "./vm-placement.js";

const VMS = "vms/";

/** One placement moved to the only copy of a VM, for logs and the audit trail. */
export interface AdoptedPlacement {
  readonly vmId: string;
  readonly tenant: string;
  /** The node the record named, which no longer holds the VM. */
  readonly from: string;
  /** The node holding the only copy, the VM's placement now. */
  readonly to: string;
  readonly generation: bigint;
  /**
   * Marked lost running (its copy not running, nobody asked it stopped): if
   * its node reports it HA, the controller's HA restart starts it there once.
   */
  readonly marked: boolean;
}

/**
 * Placement from the truth: a VM whose record names node A while A's own
 * report, sent after the record was last written, does not have it, and
 * exactly one other node B reports a copy (a stale copy on the record), has
 * only that copy. Left alone, an HA VM stays down for good: failover looks
 * only at what A reports, the HA restart only at the placed node, and the
 * conflict cleanup never removes the last copy (seen in a 30-minute chaos
 * run: a migration's hand-over completed while its record was settled as
 * failed, then the arrived copy stopped). The placement moves to B with a
 * new generation, so any start still on its way to A is refused by the
 * fencing token and B's start takes the disks' locks from A.
 *
 * Only when every fact holds in one transaction with the controller's
 * election: the VM record and A's node record unchanged since read, no
 * migration or failover of the VM holding its lock, A READY (or NOT_READY
 * past the fence delay: fenced), B READY. "Sent after": A's node record was
 * written after the VM record (the agent hub records a stream's messages in
 * order, so a report recorded after the record was built after any start or
 * recover result A sent before it).
 */
export async function adoptOnlyCopies(
  deps: {
    readonly store: KvStore;
    readonly inventory: Pick<Inventory, "conflicts" | "readNode" | "getNode">;
    readonly elected: Compare;
    readonly fenceDelayMs: number;
    readonly decide: (d: AdoptedPlacement) => void;
  },
  signal: AbortSignal,
): Promise<void> {
  for (const seen of await deps.inventory.conflicts(signal)) {
    if (seen.staleCopies.length !== 1) continue;
    const got = await getMessage(deps.store, VmRecordSchema, VMS + seen.id, { signal });
    const rec = got?.message;
    if (got === undefined || rec === undefined || rec.staleCopies.length !== 1) continue;
    const copy = rec.staleCopies[0];
    if (copy === undefined || copy.nodeId === rec.nodeId) continue;
    const placed = await deps.inventory.readNode(rec.nodeId, signal);
    if (placed === undefined) continue;
    const fenced =
      placed.summary.readiness !== NodeReadiness.READY &&
      Number(placed.summary.notReadyForMs) > deps.fenceDelayMs;
    if (placed.summary.readiness !== NodeReadiness.READY && !fenced) continue;
    if (placed.unchanged.modRevision <= got.modRevision) continue;
    if (placed.vms.some((v) => v.id === rec.id)) continue;
    const holder = await deps.inventory.getNode(copy.nodeId, signal);
    if (holder?.summary.readiness !== NodeReadiness.READY) continue;
    const change = placementChange(rec.id, { rec, rev: got.modRevision }, copy.nodeId);
    const marked =
      copy.state !== VmState.RUNNING && !(rec.managed && rec.desiredState === VmState.STOPPED);
    const compares: Compare[] = [
      deps.elected,
      change.compare,
      placed.unchanged,
      { key: MIGRATION_LOCKS + rec.id, modRevision: 0 },
    ];
    const success: TxnOp[] = [change.op];
    if (marked) {
      const mark = await markLost(deps.store, rec.id, signal);
      compares.push(mark.compare);
      success.push(mark.op);
    }
    const txn = await deps.store.txn({ compares, success }, { signal });
    if (!txn.succeeded) continue;
    deps.decide({
      vmId: rec.id,
      tenant: rec.tenant,
      from: rec.nodeId,
      to: copy.nodeId,
      generation: change.generation,
      marked,
    });
  }
}

/** The put that marks the VM lost running, while its failover record is as read. */
async function markLost(
  store: KvStore,
  vmId: string,
  signal: AbortSignal,
): Promise<{ compare: Compare; op: TxnOp }> {
  const key = FAILOVER_RECORDS + vmId;
  const got = await getMessage(store, FailoverRecordSchema, key, { signal });
  const rec = got?.message ?? create(FailoverRecordSchema, { vmId });
  return {
    compare: { key, modRevision: got?.modRevision ?? 0 },
    op: {
      type: "put",
      key,
      value: encodeMessage(
        FailoverRecordSchema,
        create(FailoverRecordSchema, { ...rec, lostRunning: true }),
      ),
    },
  };
}
