/**
 * Cancelling a migration for a caller: run here, it is cancelled by the
 * runner; run by another live process, it is asked through its record
 * (`CancelRequests`) and waited for a while; a failover, or one whose
 * process is gone, is refused at once. Built once by `createMigrationEngine`.
 */
import { RpcError } from "../core/index.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import type { CancelRequests } from "./migration-cancel-requests.js";
import { jobActive } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import type { MigrationRunner } from "./migration-runner.js";
import type { MigrationWatch } from "./migration-watch.js";
import { migrationOf } from "./migration-wire.js";
import type { RunnerRegistry } from "./runner-registry.js";

/** What {@link createMigrationCancel} works with (the engine's parts). */
export interface MigrationCancelDeps {
  readonly journal: MigrationJournal;
  readonly runner: MigrationRunner;
  readonly follow: MigrationWatch;
  readonly runners: RunnerRegistry;
  /** Cancels asked of a process that does not run the migration; without it, those are refused. */
  readonly cancels: CancelRequests | undefined;
}

/** Cancels a migration a caller of `tenant` may see; resolves with it once it has answered. */
export type MigrationCancel = (
  id: string,
  tenant: string | undefined,
  signal?: AbortSignal,
) => Promise<Migration>;

/** How long a cancel asked through another process is waited for before it answers the state then. */
const REMOTE_CANCEL_WAIT_MS = 30_000;

/** Creates the {@link MigrationCancel} over `deps`. */
export function createMigrationCancel(deps: MigrationCancelDeps): MigrationCancel {
  const { journal, runner, follow, cancels } = deps;
  return async (id, tenant, signal) => {
    const job = await follow.load(id, tenant, signal);
    if (!jobActive(job)) throw new RpcError("MIGRATION_FINISHED");
    if (await runner.cancel(id)) return migrationOf(await follow.load(id, tenant, signal));
    // Ended here meanwhile (not running here any more): over, not refused.
    if (job.runner === journal.runnerId && !jobActive(await follow.load(id, tenant, signal)))
      throw new RpcError("MIGRATION_FINISHED");
    // Refused at once where nothing would act on a request: a failover (not run by a
    // migration runner), one whose process is gone (settled from the hypervisors instead).
    if (job.kind === "failover")
      throw new RpcError("MIGRATION_IN_PROGRESS", { message: "a failover cannot be cancelled" });
    if (cancels === undefined)
      throw new RpcError("MIGRATION_IN_PROGRESS", {
        message: "this migration is run by another control-plane process; cancel it there",
      });
    if (job.runner === journal.runnerId || !(await deps.runners.isAlive(job.runner, signal)))
      throw new RpcError("MIGRATION_IN_PROGRESS", {
        message:
          "the control-plane process that ran this migration is gone; it is being settled from what the nodes say",
      });
    // Run by another process: asked through its record, then waited for a while.
    if (!(await cancels.request(id, signal))) throw new RpcError("MIGRATION_FINISHED");
    const bound = AbortSignal.timeout(REMOTE_CANCEL_WAIT_MS);
    await follow
      .wait(id, signal === undefined ? bound : AbortSignal.any([signal, bound]))
      .catch((err: unknown) => {
        if (!bound.aborted) throw err;
      });
    return migrationOf(await follow.load(id, tenant, signal));
  };
}
