/**
 * One pass of the failover controller, run while leading: stale copies
 * removed first, placements moved to their only copy, then the running HA
 * VMs of NOT_READY nodes noted as lost, then those of nodes down past the
 * fence delay restarted elsewhere (at most `restartLimit` times per window)
 * and those of nodes back restored (ha-restore.ts). VMs are worked on
 * `maxParallel` at once, each VM's steps one after another: one VM whose
 * target is slow to answer holds up only itself.
 */
import { create } from "@bufbuild/protobuf";
import {
  boundedEach,
  type Clock,
  type Logger,
  msFromTimestamp,
  sameNode,
  toRpcError,
} from "../core/index.js";
import { FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage, type KvStore, updateMessage } from "../store/index.js";
import type { FailedTargets } from "./failed-targets.js";
import { FAILOVER_PRINCIPAL, type FailoverDeps, failoverVm } from "./failover.js";
import type { FailoverDecisions } from "./failover-decisions.js";
import type { FailoverLeadership } from "./failover-leadership.js";
import { FAILOVER_RECORDS, type HaRestore, lostReportOf } from "./ha-restore.js";
import type { StaleCopyRemover } from "./stale-copy-removal.js";
import { readPlacement } from "./vm-placement.js";
import { askedToStop } from "./vm-records.js";

const RECORDS = FAILOVER_RECORDS;

/** What {@link createFailoverPass} works with. */
export interface FailoverPassDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** What failoverVm needs (the controller's options). */
  readonly failover: FailoverDeps;
  /**
   * A restart's record is marked untold until the trail took it (there is a
   * trail to tell it again: migration-settle-tell.ts).
   */
  readonly markRestarts?: boolean;
  readonly leadership: FailoverLeadership;
  readonly decisions: FailoverDecisions;
  readonly ha: HaRestore;
  readonly staleCopies: StaleCopyRemover;
  /** Placements moved to their only copy (placement-from-truth.ts). */
  readonly placements: { pass(signal: AbortSignal): Promise<void> };
  /** Automatic restarts of one VM within the window before it is left alone. */
  readonly limit: number;
  readonly windowMs: number;
  /** VMs worked on at once (restarts, restores, lost marks). */
  readonly maxParallel: number;
  /** Nodes that failed to restart a VM: another node gets it first (shared with the HA restore). */
  readonly failedTargets: FailedTargets;
}

/**
 * Counts a restart of `vmId` on `target` against the limit, over the record as it is now,
 * not as read: the target's answer can take until a cut off target is back, and meanwhile
 * its agent may have said it self-fenced the vm there (noteSelfFenced). A mark on the
 * source is the one this restart answers; one on the target is kept, or the vm stays
 * stopped at its placement for good (chaos, seed 42).
 */
async function countRestart(
  store: KvStore,
  vmId: string,
  target: string,
  restarts: number,
  now: number,
  signal: AbortSignal,
) {
  await updateMessage(
    store,
    FailoverRecordSchema,
    RECORDS + vmId,
    (cur) => {
      const onTarget = cur?.lostRunning === true && sameNode(cur.lostReportNode, target);
      return create(FailoverRecordSchema, {
        vmId,
        restarts,
        lastRestartMs: BigInt(now),
        lastDecision: `restarted on ${target}`,
        ...(onTarget
          ? { lostRunning: true, lostReportNode: target, lostReportMs: cur.lostReportMs }
          : {}),
      });
    },
    { signal },
  );
}

/** One step of the pass on one VM; false when the leadership is gone (nothing more is started). */
type Step = () => Promise<boolean>;

/** Creates the controller's pass. */
export function createFailoverPass(deps: FailoverPassDeps): (signal: AbortSignal) => Promise<void> {
  const { store, clock, logger, leadership, ha, staleCopies, placements, limit, windowMs } = deps;
  const { maxParallel, failedTargets } = deps;
  const options = deps.failover;
  const { decide } = deps.decisions;

  /**
   * Restarts one HA VM of a node down past the fence delay; false when the leadership is gone
   * (found here, or by another VM's restart of the same pass: `halt`).
   */
  async function restartLost(
    vm: VmInfo,
    nodeId: string,
    now: number,
    signal: AbortSignal,
    halt: AbortController,
  ) {
    // Asked to stop (its stop waits on the dead node): not restarted elsewhere either.
    // Nor one the store holds no record of: deleted, the dead node's last report not yet
    // without it.
    const placed = await readPlacement(store, vm.id, signal);
    if (placed.rec === undefined) return true;
    if (askedToStop(placed.rec)) return true;
    const key = RECORDS + vm.id;
    const got = await getMessage(store, FailoverRecordSchema, key, { signal });
    const rec = got?.message ?? create(FailoverRecordSchema, { vmId: vm.id });
    const recent = now - Number(rec.lastRestartMs) < windowMs ? rec.restarts : 0;
    // Still the leader? A long pass must not outlive the lease that allows it. Not asked
    // again once another VM found it gone: asked then, it could be taken anew mid-pass.
    if (halt.signal.aborted || !(await leadership.lead())) {
      halt.abort();
      leadership.lost();
      return false;
    }
    if (recent >= limit) {
      decide({
        vmId: vm.id,
        node: nodeId,
        tenant: vm.tenant,
        action: "skipped",
        detail: `restart limit reached (${limit} in ${Math.round(windowMs / 60_000)} min)`,
      });
      return true;
    }
    let m: Migration;
    try {
      // Conditional on still holding the election (its key's revision, not a clock).
      m = await failoverVm(options, vm.id, FAILOVER_PRINCIPAL, undefined, signal, {
        compares: [leadership.elected()],
        avoid: failedTargets.avoid(vm.id, now),
        // Dated when it failed, not at the pass's start: a target holding the restart until
        // the recover timeout (2 minutes) was otherwise past its avoidance as it failed.
        onRecoverFailed: (target) => failedTargets.failed(vm.id, target, clock.now()),
        // Its end is told below; a process dying before leaves it to a reconcile pass.
        untold: deps.markRestarts === true,
      });
    } catch (err) {
      const rpc = toRpcError(err);
      decide({
        vmId: vm.id,
        node: nodeId,
        tenant: vm.tenant,
        action: "failed",
        detail: rpc.message,
        reason: rpc.reason,
      });
      return true;
    }
    failedTargets.restarted(vm.id);
    const target = m.target?.nodeId?.id ?? "";
    // Told as soon as it ran, its mark cleared once the trail took it: a process killed
    // before (or a trail that refused it) leaves the restart to a reconcile pass, not
    // unaudited. Not awaited: a trail that hangs must not hold up the pass's restarts.
    void options.engine.told(
      m.migrationId,
      decide({
        vmId: vm.id,
        node: nodeId,
        tenant: vm.tenant,
        action: "restarted",
        detail: `restarted on ${target}`,
        migrationId: m.migrationId,
      }).then(() => {}),
    );
    // A restart that ran is not told as failed when only its count could not be written
    // (it was, and its record then said both).
    await countRestart(store, vm.id, target, recent + 1, now, signal).catch((err: unknown) =>
      logger.warn({ err, vm: vm.id }, "vm restarted; its restart not counted"),
    );
    return true;
  }

  return async function pass(signal: AbortSignal) {
    const now = clock.now();
    // Conflicts first: a stale copy must never be what a restart below brings
    // back. A failure here is logged and must not hold up failovers.
    await staleCopies
      .pass(signal)
      .catch((err: unknown) => logger.warn({ err }, "stale copies not removed; next pass"));
    // Then placements naming a node that no longer holds the VM, moved to its only copy.
    await placements
      .pass(signal)
      .catch((err: unknown) => logger.warn({ err }, "placements not reconciled; next pass"));
    const nodes = await options.inventory.listNodes(signal);
    // Lost marks first: store writes only, and a node's short NOT_READY must not go unseen
    // behind slow restarts (chaos, seed 105).
    const notes = new Map<string, Step[]>();
    const acts = new Map<string, Step[]>();
    const halt = new AbortController();
    for (const node of nodes) {
      const nodeId = node.info?.id?.id ?? "";
      const ready = node.readiness === NodeReadiness.READY;
      const past = !ready && Number(node.notReadyForMs) > options.fenceDelayMs;
      const report = { nodeId, reportMs: msFromTimestamp(node.health?.timestamp) };
      const confirmLost = lostReportOf(options.inventory, nodeId, signal);
      for (const vm of node.health?.vms ?? []) {
        if (!vm.ha) continue;
        if (ready) {
          stepOf(acts, vm.id, async () => {
            await ha.restore(report, vm, now, signal);
            return true;
          });
          continue;
        }
        if (vm.state === VmState.STOPPED) continue;
        stepOf(notes, vm.id, async () => {
          await ha.noteLost(confirmLost, vm, signal);
          return true;
        });
        if (past) stepOf(acts, vm.id, () => restartLost(vm, nodeId, now, signal, halt));
      }
    }
    await boundedEach(notes.values(), maxParallel, signal, inTurn);
    if (!(await boundedEach(acts.values(), maxParallel, signal, inTurn))) return;
    // Last: another removal for one stale copy still listed, after the failovers.
    await staleCopies
      .retry(signal)
      .catch((err: unknown) => logger.warn({ err }, "stale copy not removed again; next pass"));
  };
}

/** Adds a step to a VM's: a VM listed twice (under two nodes) is never worked on twice at once. */
function stepOf(steps: Map<string, Step[]>, vmId: string, step: Step) {
  const mine = steps.get(vmId);
  if (mine === undefined) steps.set(vmId, [step]);
  else mine.push(step);
}

/** Runs one VM's steps one after another; false (and nothing more) once one is. */
async function inTurn(steps: readonly Step[]): Promise<boolean> {
  for (const step of steps) if (!(await step())) return false;
  return true;
}
