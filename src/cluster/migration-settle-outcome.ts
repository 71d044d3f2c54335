/**
 * The decision of settling one orphaned migration, once its hypervisor job
 * has ended: from where the VM is (source, target, both or neither) the job
 * finishes, rolls back or is left unresolved for an operator; a VM that is
 * to run is started again, an HA one that could not be is left to HA
 * restore, and a VM found on the target has its placement moved; one only
 * presumed there (its target unreachable), once published, is left to HA
 * restore too. Built once by `createMigrationSettler`, which publishes what
 * this decides.
 */
import type { Logger } from "../core/index.js";
import { type DomainState, type DomainStatus, vmStateOf } from "../drivers/index.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { jobFinished, jobUnresolved, type MigrationJob } from "./migration-job.js";
import { UNREACHABLE } from "./migration-job-probe.js";
import type { MigrationJournal } from "./migration-journal.js";
import { movePlacement } from "./migration-move.js";

/**
 * Marks an HA VM lost running on `nodeId` (see noteSelfFenced), against the
 * node's report stamped `reportMs` (default 0: any later report of it
 * running says it survived).
 */
export type MarkLostRunning = (nodeId: string, vmId: string, reportMs?: number) => Promise<unknown>;

/** What {@link createMigrationSettleOutcome} works with (the settler's). */
export interface MigrationSettleOutcomeDeps {
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly journal: MigrationJournal;
  readonly logger: Logger;
  /**
   * As the runner's: an HA VM that could not be started again, or is only
   * presumed to run, is left to HA restore.
   */
  readonly markLostRunning?: MarkLostRunning;
}

/** Decides how an orphaned migration ends. */
export interface MigrationSettleOutcome {
  /**
   * The job as settled from where the VM is (`onSource` may be
   * {@link UNREACHABLE}), with the VM started or its placement moved on the
   * way; not yet published. `leaveOn`: the node where the VM could not be
   * started again, where it is placed once the job is published; then
   * {@link notStarted} leaves it to HA restore. `sig` bounds the calls to
   * the nodes, `signal` (the caller's) the reads and the placement move.
   */
  decide(
    job: MigrationJob,
    onSource: DomainStatus | undefined,
    onTarget: DomainStatus | undefined,
    sig: AbortSignal,
    signal?: AbortSignal,
  ): Promise<{ settled: MigrationJob; leaveOn?: string }>;
  /**
   * After a job whose VM `decide` could not start again on `node` is
   * published: an HA VM is left to HA restore there. Not before: a VM that
   * arrived on the target while a migration held it is no placement of the
   * target's until the job's end commits it (its report of the VM is a
   * stale copy till then), and a node's mark of a VM placed elsewhere is refused.
   */
  notStarted(job: MigrationJob, node: string, signal?: AbortSignal): Promise<void>;
  /**
   * After `job`, settled with its VM presumed arrived on a target that
   * could not be asked, is published (its placement committed there):
   * nothing shows the VM runs, so an HA one is left to HA restore against
   * `reportMs`, the stamp of the target's last report read before settling
   * (only a later one says whether it runs there). HA restore then starts
   * it there if the target's next report has it stopped (the node was
   * reset, say), and clears the mark if that report has it running (it
   * survived).
   */
  presumedArrived(job: MigrationJob, reportMs: number, signal?: AbortSignal): Promise<void>;
}

/** Creates the {@link MigrationSettleOutcome} over `deps`. */
export function createMigrationSettleOutcome(
  deps: MigrationSettleOutcomeDeps,
): MigrationSettleOutcome {
  const { inventory, executors, journal, logger } = deps;

  /** Starts the job's VM on `node` if it is to run; true when that failed. */
  async function restart(
    job: MigrationJob,
    node: string,
    state: DomainState | undefined,
    sig: AbortSignal,
  ): Promise<boolean> {
    // A live migration promised a running VM: one that arrived stopped (its source
    // self-fenced mid-transfer, say) is started, like one moved with a restart.
    if (!(job.restartAfter || job.live) || state !== "stopped") return false;
    try {
      await executors.forNode(node)?.start(job.vmId, sig);
      return false;
    } catch (err) {
      logger.error({ err, vm: job.vmId, node }, "restart after settling failed");
      return true;
    }
  }

  /**
   * An HA VM not started again on `node`, where it is placed now, is left to
   * HA restore (against `node`'s report stamped `reportMs`, if given).
   */
  async function leaveToHaRestore(
    vmId: string,
    node: string,
    signal?: AbortSignal,
    reportMs?: number,
  ) {
    const vm = await inventory.findVm(vmId, signal);
    // HA is the nodes' to report. A VM that arrived may be in no report (the target's copy
    // kept out as a conflict while the record named the source): marked all the same, as
    // HA restore acts on a mark only for a VM its node reports HA.
    if (vm !== undefined && !vm.ha) return;
    await deps
      .markLostRunning?.(node, vmId, reportMs)
      .catch((err: unknown) =>
        logger.error({ err, vm: vmId, node }, "vm not marked for HA restore"),
      );
  }

  async function decide(
    job: MigrationJob,
    onSource: DomainStatus | undefined,
    onTarget: DomainStatus | undefined,
    sig: AbortSignal,
    signal?: AbortSignal,
  ): Promise<{ settled: MigrationJob; leaveOn?: string }> {
    const { vmId, source, target } = job;
    let settled: MigrationJob;
    let leaveOn: string | undefined;
    if (job.kind === "failover" && onTarget === undefined) {
      settled = jobFinished(
        job,
        { state: "failed", phase: "rolled-back" },
        "control plane stopped mid-failover; the vm was not restarted",
      );
    } else if (onTarget !== undefined && onSource === undefined) {
      const notStarted = await restart(job, target, onTarget.state, sig);
      settled = jobFinished(
        job,
        { state: "succeeded", phase: "completed" },
        `finished while the control plane was down; the vm is on ${target}`,
      );
      const vm = await inventory.findVm(vmId, signal);
      if (vm !== undefined)
        await movePlacement(
          inventory,
          journal,
          job,
          { ...vm, state: vmStateOf(onTarget.state) },
          logger,
          signal,
        );
      if (notStarted) leaveOn = target;
    } else if (onSource !== undefined && onTarget === undefined) {
      if (onSource !== UNREACHABLE && (await restart(job, source, onSource.state, sig)))
        leaveOn = source;
      settled = jobFinished(
        job,
        { state: "failed", phase: "rolled-back" },
        onSource === UNREACHABLE
          ? `control plane stopped mid-migration and ${source} is unreachable; the vm never reached ${target}`
          : `control plane stopped mid-migration; rolled back, the vm stays on ${source}`,
      );
    } else {
      settled = jobUnresolved(
        job,
        onSource === undefined
          ? `vm found on neither ${source} nor ${target}; operator action needed`
          : `vm defined on both ${source} and ${target}; operator action needed`,
      );
      logger.error({ migration: job.id, vm: vmId }, settled.message);
    }
    return { settled, leaveOn };
  }

  return {
    decide,
    notStarted: (job, node, signal) => leaveToHaRestore(job.vmId, node, signal),
    presumedArrived: (job, reportMs, signal) =>
      leaveToHaRestore(job.vmId, job.target, signal, reportMs),
  };
}
