import { setTimeout as sleep } from "node:timers/promises";
import { type Logger, RpcError, rethrowAborted } from "../core/index.js";
import { canAbortJob, canQuiesce, type DomainStatus } from "../drivers/index.js";
import type { Executors } from "./executors.js";
import type { MigrationJob } from "./migration-job.js";

/** Where the hypervisors have a migration's VM once no job of it runs. */
export interface JobOutcome {
  /** On the source; {@link UNREACHABLE} when the source cannot be asked and the target lacks it. */
  readonly onSource: DomainStatus | undefined;
  /** On the target; {@link PRESUMED_ARRIVED} when it cannot be asked and the source lacks the VM. */
  readonly onTarget: DomainStatus | undefined;
}

/** What settling assumes of a source it cannot reach while the target lacks the VM. */
export const UNREACHABLE: DomainStatus = Object.freeze({
  id: "",
  state: "stopped",
  vcpus: 0,
  memoryBytes: 0n,
  persistent: true,
});

/**
 * The VM on a target that cannot be asked while its source answered without
 * it: taken to have arrived (running: nothing is sent to start it there).
 * Nothing shows it runs: settling leaves an HA one to HA restore, which
 * looks at the target's next report.
 */
export const PRESUMED_ARRIVED: DomainStatus = Object.freeze({
  id: "",
  state: "running",
  vcpus: 0,
  memoryBytes: 0n,
  persistent: true,
});

/** Asks a migration's two hypervisors about its job. */
export interface JobProbe {
  /**
   * Where the VM is once no job of it runs on either node; "busy" while one
   * still does (a node's agent still has it, or a hypervisor reports it
   * migrating), including when `wait` aborts before an agent's job ended.
   */
  look(job: MigrationJob, signal: AbortSignal, wait: AbortSignal): Promise<JobOutcome | "busy">;
  /** Asks both nodes to abort any job of the VM (a no-op where none runs or the driver cannot). */
  abort(job: MigrationJob, signal: AbortSignal): Promise<void>;
  /** `look` again every 100 ms until the job has ended or `ms` passed ("busy"). */
  awaitEnd(job: MigrationJob, signal: AbortSignal, ms: number): Promise<JobOutcome | "busy">;
}

/** Creates the {@link JobProbe} over the executors. */
export function createJobProbe(executors: Executors, logger: Logger): JobProbe {
  async function look(
    job: MigrationJob,
    signal: AbortSignal,
    wait: AbortSignal,
  ): Promise<JobOutcome | "busy"> {
    const { vmId, source, target } = job;
    // A node that runs jobs itself (an agent) may still be moving the vm: its outcome decides.
    for (const node of [source, target]) {
      const driver = executors.forNode(node);
      if (driver === undefined || !canQuiesce(driver)) continue;
      try {
        await driver.quiesce(vmId, AbortSignal.any([signal, wait]));
      } catch (err) {
        if (wait.aborted && !signal.aborted) return "busy";
        // The node cannot say yet how its job ended (down with it, or no report made since):
        // settled on a later pass, like a job still running.
        if (err instanceof RpcError && err.reason === "BACKEND_UNAVAILABLE") {
          logger.info({ node, vm: vmId, why: err.message }, "no answer yet; settling later");
          return "busy";
        }
        throw err;
      }
    }
    // The source, as before: any failure to answer is "cannot be asked". The target only
    // when its node says so (not reporting, down): it may then be taken to hold the VM.
    const unreachable = (node: string, any: boolean) => (err: unknown) => {
      if (!any && !(err instanceof RpcError && err.reason === "BACKEND_UNAVAILABLE")) throw err;
      logger.warn({ err, node, vm: vmId }, "node unreachable while settling");
      return UNREACHABLE;
    };
    const askedTarget = await executors
      .forNode(target)
      ?.info(vmId, signal)
      .catch(unreachable(target, false));
    const askedSource = await executors
      .forNode(source)
      ?.info(vmId, signal)
      .catch(unreachable(source, true));
    // Neither can be asked: nothing to decide from yet.
    if (askedTarget === UNREACHABLE && askedSource === UNREACHABLE) return "busy";
    if (askedTarget === UNREACHABLE) {
      // A target that cannot be asked (its node died after the hand-over, say): the source
      // decides. Without the VM there, the VM went over: placed on the target, which
      // failover then follows (before, the lock was held for good and the record named a
      // source without the VM).
      if (askedSource?.migrating === true) return "busy";
      return askedSource !== undefined
        ? { onSource: askedSource, onTarget: undefined }
        : { onSource: undefined, onTarget: PRESUMED_ARRIVED };
    }
    const onTarget = askedTarget;
    // A source that cannot be reached (its node died too) did not hand the VM
    // over: the target is the one that decides. Settling then releases the
    // VM's lock, so failover can take it.
    const onSource =
      askedSource === UNREACHABLE
        ? onTarget === undefined
          ? UNREACHABLE
          : undefined
        : askedSource;
    if (onTarget?.migrating === true || (onSource !== UNREACHABLE && onSource?.migrating === true))
      return "busy";
    return { onSource, onTarget };
  }

  return {
    look,
    async abort(job, signal) {
      for (const node of [job.source, job.target]) {
        const driver = executors.forNode(node);
        if (driver === undefined || !canAbortJob(driver)) continue;
        await driver
          .abortJob(job.vmId, signal)
          .catch((err: unknown) =>
            logger.warn({ err, node, vm: job.vmId }, "could not ask to abort the job"),
          );
      }
    },
    async awaitEnd(job, signal, ms) {
      const until = AbortSignal.timeout(ms);
      for (;;) {
        const seen = await look(job, signal, until);
        if (seen !== "busy" || until.aborted) return seen;
        await sleep(100, undefined, { signal }).catch(rethrowAborted(signal));
      }
    },
  };
}
