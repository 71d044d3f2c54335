import { type Logger, RpcError } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";
import type { MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";

/**
 * Moves the VM's placement and the nodes' lists to the job's target, only
 * while the job's record is still this process's: a runner that stalled
 * after the hand-over (its lease lost, its migration settled by another
 * process, the VM failed over since) must not move the placement back onto
 * a copy that is being removed (seen in the chaos test: the VM then ran on
 * one node while placed on another, for good).
 */
export async function movePlacement(
  inventory: Pick<Inventory, "moveVm">,
  journal: Pick<MigrationJournal, "ownership">,
  job: MigrationJob,
  vm: VmInfo,
  logger: Logger,
  signal?: AbortSignal,
): Promise<void> {
  try {
    for (let attempt = 1; ; attempt++) {
      const owned = await journal.ownership(job, signal);
      if (owned === undefined) {
        logger.warn(
          { migration: job.id, vm: vm.id },
          "migration taken over by another control-plane process; placement left to it",
        );
        return;
      }
      try {
        await inventory.moveVm(vm, job.source, job.target, signal, [owned]);
        return;
      } catch (err) {
        // The record changed without changing hands (a cancel asked through another process
        // flags it): its ownership is read again. Seen by review.
        if (!(err instanceof RpcError && err.reason === "CONFLICT") || attempt >= MOVE_ATTEMPTS)
          throw err;
      }
    }
  } catch (err) {
    logger.warn({ err, migration: job.id, vm: vm.id }, "inventory not updated; heartbeats will");
  }
}

/** Reads of the record's ownership before the move gives up (each change of it costs one). */
const MOVE_ATTEMPTS = 3;
