import { type Logger, RpcError, toRpcError } from "../core/index.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { jobAdvanced, jobFinished, jobRunning, type MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import { movePlacement } from "./migration-move.js";

/** Options of {@link createMigrationRunner}. */
export interface MigrationRunnerOptions {
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly journal: MigrationJournal;
  readonly logger: Logger;
  /**
   * Marks an HA VM lost running on `nodeId` (see noteSelfFenced), so that
   * HA restore starts it there: an offline move that stopped it and moved
   * it, and then could not start it on the target.
   */
  readonly markLostRunning?: (nodeId: string, vmId: string) => Promise<unknown>;
  /** Resolves once another process asks for the migration's cancellation (see CancelRequests). */
  readonly cancelRequested?: (id: string, signal: AbortSignal) => Promise<void>;
}

/** Runs this process's migrations, each in the background until it ends. */
export interface MigrationRunner {
  /** Runs a job the journal has begun; returns it as now running. */
  launch(job: MigrationJob, vm: VmInfo): MigrationJob;
  /** Whether this process runs the migration. */
  runsHere(id: string): boolean;
  /** Cancels a migration this process runs and waits for its end (it rolls back); false: not run here. */
  cancel(id: string): Promise<boolean>;
  /** Aborts every migration this process runs (each rolls back): its runner lease was lost. */
  abortAll(reason: string): void;
  /** Stops every migration this process runs (each rolls back) and waits for them. */
  close(): Promise<void>;
}

/** Limit of a backend step taken after the caller's signal no longer applies. */
const BACKEND_STEP_MS = 120_000;

/**
 * Creates the {@link MigrationRunner}. A migration stops the VM first when
 * it is an offline move of a running VM (it then runs again wherever it
 * ends up), moves it with the source's hypervisor, and publishes each step
 * through the journal; a failure or cancel before the move rolls back (the
 * VM stays on the source), one after it is a failure on the target.
 */
export function createMigrationRunner(options: MigrationRunnerOptions): MigrationRunner {
  const { inventory, executors, journal, logger } = options;
  const running = new Map<string, { abort: AbortController; done: Promise<void> }>();

  async function run(first: MigrationJob, vm: VmInfo, signal: AbortSignal) {
    let job = first;
    const { source, target } = job;
    const src = executors.forNode(source);
    const dst = executors.forNode(target);
    let restartOnTarget = false;
    let moved = false;
    try {
      if (src === undefined || dst === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
      await journal.publish(job, { force: true });
      const before = await src.info(vm.id, signal);
      if (before === undefined) throw new RpcError("VM_NOT_FOUND");
      if (!job.live && before.state === "running") {
        // Offline move: stop it here, move it, start it there. From the moment
        // the stop is asked for, the vm must run again wherever it ends up.
        job = { ...jobRunning(job, "stopping the vm for an offline move"), restartAfter: true };
        restartOnTarget = true;
        await journal.publish(job, { force: true });
        await src.stop(vm.id, { force: false, signal });
      }
      await src.migrate(vm.id, executors.destination(target), {
        live: job.live,
        signal,
        onProgress: (p) => {
          job = jobAdvanced(job, p);
          journal
            .publish(job, { force: p.phase !== "transferring" })
            .catch((err: unknown) => logger.warn({ err, migration: job.id }, "progress not saved"));
        },
      });
      moved = true;
      // Past the move, cancelling no longer applies: the vm is started there regardless.
      if (restartOnTarget) await dst.start(vm.id, AbortSignal.timeout(BACKEND_STEP_MS));
      job = jobFinished(
        job,
        { state: "succeeded", phase: "completed" },
        job.live ? "migrated live" : "moved stopped",
      );
    } catch (err) {
      const rpc = toRpcError(err);
      if (rpc.reason === "SHUTTING_DOWN" && !moved) {
        // The node's agent runs the move itself and this process is stopping: the record
        // stays RUNNING, and whoever settles orphans asks the agents how it ended.
        logger.info({ migration: job.id, vm: vm.id }, "left to the node's agent and a successor");
        return;
      }
      if (rpc.reason === "OPERATION_INTERRUPTED" && !moved) {
        // The move's outcome is unknown (its source went down with it, or its agent restarted
        // mid-job): the record stays RUNNING, disowned, and settling (this process's own
        // next pass) decides from what the nodes report, as for a runner that died.
        logger.warn({ err, migration: job.id, vm: vm.id }, "outcome unknown; left to settling");
        return;
      }
      if (moved) {
        job = jobFinished(
          job,
          { state: "failed", phase: "completed" },
          `moved to ${target} but not started there: ${rpc.message}`,
        );
      } else {
        if (restartOnTarget) {
          await src
            ?.start(vm.id, AbortSignal.timeout(BACKEND_STEP_MS))
            .catch((e: unknown) => logger.error({ err: e, vm: vm.id }, "restart on source failed"));
        }
        job = signal.aborted
          ? jobFinished(
              job,
              { state: "cancelled", phase: "rolled-back" },
              `cancelled; the vm stays on ${source}`,
            )
          : jobFinished(
              job,
              { state: "failed", phase: "rolled-back" },
              `${rpc.message}; the vm stays on ${source}`,
            );
      }
      logger.warn({ err, migration: job.id, vm: vm.id }, "migration did not complete");
    }
    if (moved) {
      // Placed as it is now: an offline move's VM that did not start again is stopped there.
      // Placed RUNNING, a controller pass before the target's next report would take the
      // mark below for a VM that survived, and clear it (seen by review).
      const runs = job.live || (restartOnTarget && job.status.state === "succeeded");
      const state = runs ? VmState.RUNNING : restartOnTarget ? VmState.STOPPED : vm.state;
      await movePlacement(inventory, journal, job, { ...vm, state }, logger);
    }
    await journal.publish(job, { final: true });
    // Stopped for the move and not started again: an HA VM is left to HA restore on the
    // target (a plain VM stays stopped). Once published, which places it there: after a
    // placement move that failed, a mark made before was refused (seen by review).
    if (moved && restartOnTarget && job.status.state === "failed" && vm.ha)
      await options
        .markLostRunning?.(target, vm.id)
        .catch((err: unknown) =>
          logger.error({ err, vm: vm.id, node: target }, "vm not marked for HA restore"),
        );
  }

  return {
    launch(job, vm) {
      const started = jobRunning(job);
      const abort = new AbortController();
      // Watched while it runs: a cancel asked through another process is done here.
      const watching = new AbortController();
      options.cancelRequested?.(job.id, watching.signal).then(
        () => {
          logger.info({ migration: job.id }, "cancel asked through another process");
          abort.abort();
        },
        () => {},
      );
      const done = run(started, vm, abort.signal)
        .catch((err: unknown) =>
          logger.error({ err, migration: job.id }, "migration runner failed"),
        )
        .finally(() => {
          watching.abort();
          running.delete(job.id);
          journal.disown(job.id);
        });
      running.set(job.id, { abort, done });
      return started;
    },
    runsHere: (id) => running.has(id),
    async cancel(id) {
      const local = running.get(id);
      if (local === undefined) return false;
      local.abort.abort();
      await local.done;
      return true;
    },
    abortAll(reason) {
      for (const [id, r] of running) {
        logger.warn({ migration: id, reason }, "aborting a migration this process runs");
        r.abort.abort();
      }
    },
    async close() {
      for (const r of running.values()) r.abort.abort();
      await Promise.all([...running.values()].map((r) => r.done));
    },
  };
}
