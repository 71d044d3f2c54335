import { type Clock, type Logger, msFromTimestamp, sameNode } from "../core/index.js";
import type { DomainStatus } from "../drivers/index.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { jobActive, type MigrationJob } from "./migration-job.js";
import { createJobProbe, type JobOutcome, PRESUMED_ARRIVED } from "./migration-job-probe.js";
import type { MigrationJournal } from "./migration-journal.js";
import { createMigrationSettleOutcome, type MarkLostRunning } from "./migration-settle-outcome.js";
import { createMigrationSettleTell } from "./migration-settle-tell.js";
import type { RunnerRegistry } from "./runner-registry.js";

/**
 * The VM as its migration's target reported it, when that report left it
 * out: the runner died after the hand-over and before it committed the
 * placement, so the target reported a VM still placed on the source, and
 * the inventory kept that copy out of the target's report as a conflict (a
 * stale copy; a stopped one stays one, see placeReported). The VM's record
 * still names the copy, with its state; it is the only trace of the VM, and
 * settling would otherwise find it on neither node. A copy being removed
 * (cleanup sent) is not taken.
 */
async function arrivedUnseen(
  inventory: Inventory,
  vmId: string,
  target: string,
): Promise<DomainStatus | undefined> {
  const rec = (await inventory.vmRecords.all()).get(vmId)?.rec;
  const copy = rec?.staleCopies.find((c) => sameNode(c.nodeId, target) && !c.cleanupSent);
  if (rec === undefined || copy === undefined) return undefined;
  return {
    id: vmId,
    state: copy.state === VmState.RUNNING ? "running" : "stopped",
    vcpus: rec.spec?.vcpus ?? 0,
    memoryBytes: rec.spec?.memoryBytes ?? 0n,
    persistent: true,
  };
}

/** Options of {@link createMigrationSettler}. */
export interface MigrationSettlerOptions {
  /** Where a settle's mark is cleared once told (the journal's store). */
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly journal: MigrationJournal;
  readonly runners: RunnerRegistry;
  readonly clock: Clock;
  readonly logger: Logger;
  /**
   * How long an orphan's hypervisor job may go on, from when this process
   * first tried to settle it, before it is aborted (default 30 min, as
   * libvirt.migrateTimeoutMs).
   */
  readonly jobTimeoutMs?: number;
  /**
   * Told of each job settled (for the audit trail), at least once: resolves
   * once the trail took it; a rejection leaves it to a later pass
   * (migration-settle-tell.ts).
   */
  readonly onSettled?: (job: MigrationJob) => Promise<void> | void;
  /** As `onSettled`, for a failover controller's restart left untold by its controller. */
  readonly onRestarted?: (job: MigrationJob) => Promise<void> | void;
  /** A tell of the trail not answered within this counts as refused (default 60 s). */
  readonly tellTimeoutMs?: number;
  /** As the runner's: an HA VM that could not be started again, or is only presumed to run, is left to HA restore. */
  readonly markLostRunning?: MarkLostRunning;
}

/** Settles migrations whose runner is gone. */
export interface MigrationSettler {
  /**
   * Finishes or rolls back migrations whose runner is gone, from what the
   * hypervisors report. Returns how many it settled. One pass at a time.
   */
  reconcile(signal?: AbortSignal): Promise<number>;
  /** As `MigrationSettleTell.told`: a controller restart's end told by the controller. */
  told(id: string, telling: Promise<void>): Promise<void>;
}

/** After asking for a job's abort, how long its end is awaited in one pass. */
const ABORT_WAIT_MS = 10_000;
/** How long a VM found on neither node of an orphaned migration is looked for again before the record says so. */
const NEITHER_WAIT_MS = 60_000;

/**
 * Creates the {@link MigrationSettler}. Settling decides from the truth: it
 * first waits for any hypervisor job of the migration's VM to end (asking
 * both nodes); a job still running `jobTimeoutMs` after the first try is
 * aborted, and only once it has ended is the record decided and the lock
 * and reservation released. Until then nothing is written.
 */
export function createMigrationSettler(options: MigrationSettlerOptions): MigrationSettler {
  const { inventory, executors, journal, runners, clock, logger } = options;
  const jobTimeoutMs = options.jobTimeoutMs ?? 1_800_000;
  const probe = createJobProbe(executors, logger);
  const outcome = createMigrationSettleOutcome({
    inventory,
    executors,
    journal,
    logger,
    markLostRunning: options.markLostRunning,
  });
  const told = createMigrationSettleTell({
    store: options.store,
    logger,
    onSettled: options.onSettled,
    onRestarted: options.onRestarted,
    runners,
    tellTimeoutMs: options.tellTimeoutMs,
  });
  /** When this process first tried to settle each orphan (its own clock). */
  const firstTried = new Map<string, number>();
  let reconciling: Promise<number> | undefined;

  /** Where the VM is once the job ended (aborted when overdue), or undefined: settle later. */
  async function truth(job: MigrationJob, sig: AbortSignal): Promise<JobOutcome | undefined> {
    const since = firstTried.get(job.id) ?? clock.now();
    firstTried.set(job.id, since);
    const left = since + jobTimeoutMs - clock.now();
    const seen = await probe.look(job, sig, AbortSignal.timeout(Math.max(0, left)));
    if (seen !== "busy") return seen;
    if (left > 0) {
      logger.info(
        { migration: job.id, vm: job.vmId },
        "hypervisor job still running; settling later",
      );
      return undefined;
    }
    logger.warn(
      { migration: job.id, vm: job.vmId, timeoutMs: jobTimeoutMs },
      "hypervisor job of an orphaned migration did not end in time; aborting it",
    );
    await probe.abort(job, sig);
    const after = await probe.awaitEnd(job, sig, ABORT_WAIT_MS);
    if (after !== "busy") return after;
    logger.warn({ migration: job.id, vm: job.vmId }, "abort not confirmed yet; settling later");
    return undefined;
  }

  /**
   * Settles an orphaned migration from what the hypervisors say; undefined
   * (and nothing written: the lock and reservation stay) while either still
   * runs a migration job of the VM, to be looked at again by a later pass.
   */
  async function settle(
    job: MigrationJob,
    signal?: AbortSignal,
  ): Promise<MigrationJob | undefined> {
    const { vmId, target } = job;
    const sig = signal ?? AbortSignal.timeout(60_000);
    const seen = await truth(job, sig);
    if (seen === undefined) return undefined;
    const { onSource } = seen;
    let { onTarget } = seen;
    // Not in the target's report, but the target reported it: it is the VM, arrived. Only
    // when the source answered without it: a source that cannot be asked may still run the
    // VM, and a stale copy on the target may be an old one (an earlier failover's).
    const arrived =
      onTarget === undefined && onSource === undefined
        ? await arrivedUnseen(inventory, vmId, target)
        : undefined;
    if (arrived !== undefined) onTarget = arrived;
    // Found on neither node: a hand-over between them may be in flight (asked one after
    // the other, each may have missed it). Asked again on later passes for a while.
    const since = firstTried.get(job.id) ?? clock.now();
    if (
      onSource === undefined &&
      onTarget === undefined &&
      clock.now() - since < Math.min(jobTimeoutMs, NEITHER_WAIT_MS)
    ) {
      logger.info({ migration: job.id, vm: vmId }, "vm found on neither node; settling later");
      return undefined;
    }
    // Presumed on a target that could not be asked: its last report the store holds, read
    // before anything moves. Only a later one says whether the VM runs there.
    const lastReport =
      onTarget === PRESUMED_ARRIVED
        ? msFromTimestamp((await inventory.readNode(target, signal))?.summary.health?.timestamp)
        : undefined;
    // Marked untold in the settle's own write: a process dying before its trail took the
    // record left a settle no one audited (migration-settle-tell.ts).
    const decided = await outcome.decide(job, onSource, onTarget, sig, signal);
    const published = await journal.publish(told.mark(decided.settled), { final: true });
    if (decided.leaveOn !== undefined) await outcome.notStarted(published, decided.leaveOn, signal);
    // Placed on the target now (publishing commits it): an HA VM is left to HA restore,
    // or a target reset meanwhile (its VMs stopped) and back before failover saw it down
    // leaves it on no node for good (chaos, seed 42).
    if (lastReport !== undefined) await outcome.presumedArrived(published, lastReport, signal);
    firstTried.delete(job.id);
    return published;
  }

  async function reconcilePass(signal?: AbortSignal): Promise<number> {
    let count = 0;
    const all = await journal.list(signal);
    // Orphans settled elsewhere (or gone) are no longer timed here.
    const active = new Set(all.filter(({ job }) => jobActive(job)).map(({ job }) => job.id));
    for (const id of firstTried.keys()) if (!active.has(id)) firstTried.delete(id);
    for (const { job, modRevision } of all) {
      if (!jobActive(job) || journal.owns(job.id)) continue;
      // Someone else's, and that process is alive: it is theirs to finish.
      if (job.runner !== journal.runnerId && (await runners.isAlive(job.runner, signal))) continue;
      const claimed = await journal.claim(job, modRevision, signal);
      if (claimed === undefined) continue;
      try {
        const settled = await settle(claimed, signal);
        if (settled === undefined) continue;
        count++;
        logger.info({ migration: job.id, state: settled.status.state }, "reconciled");
        // Not awaited: a trail that hangs (its disk stalled) must not stop this process
        // settling; the pass does not claim a settle it is telling.
        void told.tell(settled);
      } catch (err) {
        logger.warn({ err, migration: job.id }, "reconcile failed; will retry");
      }
    }
    await told.tellLeftUntold(all, signal);
    return count;
  }

  return {
    told: told.told,
    reconcile(signal) {
      // One pass at a time: a slow settle must not be claimed again by the next pass.
      reconciling ??= reconcilePass(signal).finally(() => {
        reconciling = undefined;
      });
      return reconciling;
    },
  };
}
