import type { Logger } from "../core/index.js";
import { canQuiesce, type DomainState, type DomainStatus, vmStateOf } from "../drivers/index.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { jobActive, jobFinished, jobUnresolved, type MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import type { RunnerRegistry } from "./runner-registry.js";

/** Options of {@link createMigrationSettler}. */
export interface MigrationSettlerOptions {
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly journal: MigrationJournal;
  readonly runners: RunnerRegistry;
  readonly logger: Logger;
  /** Told of each job settled (for the audit trail). */
  readonly onSettled?: (job: MigrationJob) => void;
}

/** Settles migrations whose runner is gone. */
export interface MigrationSettler {
  /**
   * Finishes or rolls back migrations whose runner is gone, from what the
   * hypervisors report. Returns how many it settled. One pass at a time.
   */
  reconcile(signal?: AbortSignal): Promise<number>;
}

/** What settling assumes of a source it cannot reach while the target lacks the VM. */
const UNREACHABLE: DomainStatus = {
  id: "",
  state: "stopped",
  vcpus: 0,
  memoryBytes: 0n,
  persistent: true,
};

/** Creates the {@link MigrationSettler}. */
export function createMigrationSettler(options: MigrationSettlerOptions): MigrationSettler {
  const { inventory, executors, journal, runners, logger } = options;
  let reconciling: Promise<number> | undefined;

  /**
   * Settles an orphaned migration from what the hypervisors say; false (and
   * nothing written: the lock and reservation stay) while either still runs
   * a migration job of the VM, to be looked at again by a later pass.
   */
  async function settle(
    job: MigrationJob,
    signal?: AbortSignal,
  ): Promise<MigrationJob | undefined> {
    const { vmId, source, target } = job;
    const sig = signal ?? AbortSignal.timeout(60_000);
    // A node that runs jobs itself (an agent) may still be moving the vm: its outcome decides.
    for (const node of [source, target]) {
      const driver = executors.forNode(node);
      if (driver !== undefined && canQuiesce(driver)) await driver.quiesce(vmId, sig);
    }
    const onTarget = await executors.forNode(target)?.info(vmId, sig);
    // A source that cannot be reached (its node died too) did not hand the VM
    // over: the target is the one that decides. Settling then releases the
    // VM's lock, so failover can take it.
    const onSource = await executors
      .forNode(source)
      ?.info(vmId, sig)
      .catch((err: unknown) => {
        logger.warn({ err, node: source }, "source unreachable while settling");
        return onTarget === undefined ? UNREACHABLE : undefined;
      });
    if (
      onTarget?.migrating === true ||
      (onSource !== UNREACHABLE && onSource?.migrating === true)
    ) {
      logger.info({ migration: job.id, vm: vmId }, "hypervisor job still running; settling later");
      return undefined;
    }
    const restart = async (node: string, state: DomainState | undefined) => {
      if (!job.restartAfter || state !== "stopped") return;
      await executors
        .forNode(node)
        ?.start(vmId, sig)
        .catch((err: unknown) =>
          logger.error({ err, vm: vmId, node }, "restart after settling failed"),
        );
    };
    let settled: MigrationJob;
    if (job.kind === "failover" && onTarget === undefined) {
      settled = jobFinished(
        job,
        { state: "failed", phase: "rolled-back" },
        "control plane stopped mid-failover; the vm was not restarted",
      );
    } else if (onTarget !== undefined && onSource === undefined) {
      await restart(target, onTarget.state);
      settled = jobFinished(
        job,
        { state: "succeeded", phase: "completed" },
        `finished while the control plane was down; the vm is on ${target}`,
      );
      const vm = await inventory.findVm(vmId, signal);
      if (vm !== undefined)
        await inventory.moveVm({ ...vm, state: vmStateOf(onTarget.state) }, source, target, signal);
    } else if (onSource !== undefined && onTarget === undefined) {
      if (onSource !== UNREACHABLE) await restart(source, onSource.state);
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
    return journal.publish(settled, { final: true });
  }

  async function reconcilePass(signal?: AbortSignal): Promise<number> {
    let count = 0;
    for (const { job, modRevision } of await journal.list(signal)) {
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
        options.onSettled?.(settled);
      } catch (err) {
        logger.warn({ err, migration: job.id }, "reconcile failed; will retry");
      }
    }
    return count;
  }

  return {
    reconcile(signal) {
      // One pass at a time: a slow settle must not be claimed again by the next pass.
      reconciling ??= reconcilePass(signal).finally(() => {
        reconciling = undefined;
      });
      return reconciling;
    },
  };
}
