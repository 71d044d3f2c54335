import { create } from "@bufbuild/protobuf";
import { msFromTimestamp } from "../core/index.js";
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
import { mayTakePlacement, placementChange } from "./vm-placement.js";
import { askedToStop } from "./vm-records.js";

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

/** What {@link createPlacementReconciler} needs. */
export interface PlacementReconcilerDeps {
  readonly store: KvStore;
  readonly inventory: Pick<Inventory, "conflicts" | "readNode" | "getNode">;
  /** The controller's election key as it was when this process was elected. */
  readonly elected: () => Compare;
  readonly decide: (d: AdoptedPlacement) => void;
}

/**
 * Placement from the truth: a VM whose record names node A while A does
 * not have it, and exactly one other node B reports a copy (a stale copy on
 * the record), has only that copy. Left alone, an HA VM stays down for
 * good: failover looks only at what A reports, the HA restart only at the
 * placed node, and the conflict cleanup never removes the last copy (seen
 * in a 30-minute chaos run: a migration's hand-over completed while its
 * record was settled as failed, then the arrived copy stopped). The
 * placement moves to B with a new generation, so any start still on its way
 * to A is refused by the fencing token and B's start takes the disks' locks
 * from A.
 *
 * Only when every fact holds in one transaction with the controller's
 * election: the VM record and A's node record unchanged since read, no
 * migration or failover of the VM holding its lock, B READY and its copy not
 * being removed, and A either fenced (past its fence delay, its liveness
 * unchanged) or READY with a report newer than the one it had when this
 * was first seen, the VM record unchanged since. A newer report (A's own
 * timestamps; an older one is never recorded) was recorded after that
 * first look, so after the record; the agent hub records a stream's
 * messages in order, so it was built after any start or recover result A
 * sent before it. A record bumped by anything else (a cordon, a
 * re-registration, a report refused as from the future) is no evidence.
 */
export function createPlacementReconciler(deps: PlacementReconcilerDeps): {
  pass(signal: AbortSignal): Promise<void>;
} {
  /** VM id to the record revision, placed node and that node's report time when first seen. */
  const firstSeen = new Map<string, { rev: number; node: string; reportMs: number }>();
  return {
    async pass(signal) {
      const conflicts = await deps.inventory.conflicts(signal);
      const ids = new Set(conflicts.map((r) => r.id));
      for (const id of firstSeen.keys()) if (!ids.has(id)) firstSeen.delete(id);
      for (const seen of conflicts) {
        if (seen.staleCopies.length !== 1) continue;
        if (await adoptOne(deps, firstSeen, seen.id, signal)) firstSeen.delete(seen.id);
      }
    },
  };
}

/** One VM's look; true when its placement moved. */
async function adoptOne(
  deps: PlacementReconcilerDeps,
  firstSeen: Map<string, { rev: number; node: string; reportMs: number }>,
  vmId: string,
  signal: AbortSignal,
): Promise<boolean> {
  const got = await getMessage(deps.store, VmRecordSchema, VMS + vmId, { signal });
  const rec = got?.message;
  if (got === undefined || rec === undefined || rec.staleCopies.length !== 1) return false;
  const copy = rec.staleCopies[0];
  // A copy being removed is going; one whose node refused its removal is not.
  if (copy === undefined || copy.nodeId === rec.nodeId) return false;
  if (copy.cleanupSent && !copy.removalRefused) return false;
  // A placement its node never reported (a create that has not run there) is no VM lost
  // there: a copy elsewhere is not taken for it (a stolen node certificate could report one).
  if (!mayTakePlacement(rec, copy.nodeId)) return false;
  const placed = await deps.inventory.readNode(rec.nodeId, signal);
  if (placed === undefined || placed.vms.some((v) => v.id === rec.id)) return false;
  const ready = placed.summary.readiness === NodeReadiness.READY;
  const fenced = !ready && placed.liveness.pastFenceDelay;
  if (!ready && !fenced) return false;
  const holder = await deps.inventory.getNode(copy.nodeId, signal);
  if (holder?.summary.readiness !== NodeReadiness.READY) return false;
  if (ready) {
    const reportMs = msFromTimestamp(placed.summary.health?.timestamp);
    const first = firstSeen.get(rec.id);
    if (first === undefined || first.rev !== got.modRevision || first.node !== rec.nodeId) {
      firstSeen.set(rec.id, { rev: got.modRevision, node: rec.nodeId, reportMs });
      return false;
    }
    if (reportMs <= first.reportMs) return false;
  }
  const change = placementChange(rec.id, { rec, rev: got.modRevision }, copy.nodeId);
  const marked = copy.state !== VmState.RUNNING && !askedToStop(rec);
  const compares: Compare[] = [
    deps.elected(),
    change.compare,
    placed.unchanged,
    { key: MIGRATION_LOCKS + rec.id, modRevision: 0 },
    ...(fenced ? placed.liveness.compares : []),
  ];
  const success: TxnOp[] = [change.op];
  if (marked) {
    const mark = await markLost(deps.store, rec.id, signal);
    compares.push(mark.compare);
    success.push(mark.op);
  }
  const txn = await deps.store.txn({ compares, success }, { signal });
  if (!txn.succeeded) return false;
  deps.decide({
    vmId: rec.id,
    tenant: rec.tenant,
    from: rec.nodeId,
    to: copy.nodeId,
    generation: change.generation,
    marked,
  });
  return true;
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
        // The holder's report that shows it stopped is the evidence: no stamp to wait past.
        create(FailoverRecordSchema, {
          ...rec,
          lostRunning: true,
          lostReportNode: "",
          lostReportMs: 0n,
        }),
      ),
    },
  };
}
