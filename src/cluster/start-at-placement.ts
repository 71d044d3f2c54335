/**
 * An HA VM its placed node holds stopped while the one other copy runs,
 * holding the disks: started again where it is placed, under its
 * generation, so that start takes the disks' locks from the older
 * generation elsewhere and fences that copy, as a failover's start does.
 * Part of the placement from the truth's pass (placement-from-truth.ts),
 * which checks the placed node's evidence first.
 */
import { create } from "@bufbuild/protobuf";
import {
  FailoverRecordSchema,
  type StaleCopy,
  type VmRecord,
} from "../gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  encodeMessage,
  getMessage,
  type KvStore,
  type TxnOp,
} from "../store/index.js";
import { FAILOVER_RECORDS } from "./ha-restore-records.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import { askedToStop } from "./vm-records.js";

const VMS = "vms/";

/** A VM marked to start again at its placement, for the log. */
export interface StartAtPlacement {
  readonly vmId: string;
  readonly tenant: string;
  /** The placed node, holding the VM stopped. */
  readonly node: string;
  /** The node whose copy runs, refusing its removal. */
  readonly elsewhere: string;
}

/**
 * Whether the VM, HA and not asked to stop, is held stopped by its placed
 * node while its one stale copy runs and refused its removal under the
 * VM's current generation (it holds the disks' locks, or runs under a
 * generation not older). Seen in chaos (seed 105): a failover's recover,
 * given before the failover ended interrupted and the VM was placed back,
 * ran late on its target and took the disks' locks from the copy the
 * placed node had started again under an older generation. Nothing moves
 * the placement to the copy that runs: that rests on its node's word, and
 * a stolen node certificate could draw VMs to its node that way.
 */
export function runsOnlyElsewhere(rec: VmRecord, copy: StaleCopy, placedCopy: VmInfo): boolean {
  return (
    placedCopy.ha &&
    placedCopy.state === VmState.STOPPED &&
    !askedToStop(rec) &&
    copy.state === VmState.RUNNING &&
    copy.removalRefused &&
    copy.refusedGeneration === rec.generation
  );
}

/**
 * Marks the VM lost running at its placement (the HA restore starts it
 * there once, under its restart limit), in one transaction with the
 * election, the VM's record and the placed node's record as read, and no
 * migration or failover holding it. False when it was marked already or
 * anything changed.
 */
export async function markToStartHere(
  store: KvStore,
  read: { rec: VmRecord; rev: number },
  compares: readonly Compare[],
  signal: AbortSignal,
): Promise<boolean> {
  const mark = await markLost(store, read.rec.id, signal);
  if (mark.already) return false;
  const txn = await store.txn(
    {
      compares: [
        ...compares,
        { key: VMS + read.rec.id, modRevision: read.rev },
        { key: MIGRATION_LOCKS + read.rec.id, modRevision: 0 },
        mark.compare,
      ],
      success: [mark.op],
    },
    { signal },
  );
  return txn.succeeded;
}

/**
 * The put that marks the VM lost running, while its failover record is as
 * read (`already`: it was marked).
 */
export async function markLost(
  store: KvStore,
  vmId: string,
  signal: AbortSignal,
): Promise<{ compare: Compare; op: TxnOp; already: boolean }> {
  const key = FAILOVER_RECORDS + vmId;
  const got = await getMessage(store, FailoverRecordSchema, key, { signal });
  const rec = got?.message ?? create(FailoverRecordSchema, { vmId });
  return {
    already: rec.lostRunning,
    compare: { key, modRevision: got?.modRevision ?? 0 },
    op: {
      type: "put",
      key,
      value: encodeMessage(
        FailoverRecordSchema,
        // The placed node's report that shows it stopped is the evidence: no stamp to wait past.
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
