import { setTimeout as sleep } from "node:timers/promises";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import type { Migration, MigrationKind } from "../gen/debvisor/v1/migration_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { type KvStore, LOST, retryWhileLost } from "../store/index.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { createMigrationCancel } from "./migration-cancel.js";
import type { CancelRequests } from "./migration-cancel-requests.js";
import type { MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import type { Plan, Planner } from "./migration-planner.js";
import { createMigrationPlanning } from "./migration-planning.js";
import type { MigrationRecords } from "./migration-records.js";
import { createMigrationRunner } from "./migration-runner.js";
import { createMigrationSettler } from "./migration-settle.js";
import type { MarkLostRunning } from "./migration-settle-outcome.js";
import { createMigrationWatch } from "./migration-watch.js";
import { jobKindOf, migrationOf } from "./migration-wire.js";
import type { RunnerRegistry } from "./runner-registry.js";
import type { VmOperations } from "./vm-operations.js";

/** What to migrate. */
export interface MigrationRequest {
  readonly vmId: string;
  readonly source?: string;
  /** Empty: the planner picks. */
  readonly target?: string;
  readonly allowDowntime: boolean;
  readonly kind: MigrationKind;
  readonly requestedBy: string;
  /** The caller's tenant; undefined: cluster-wide. */
  readonly tenant: string | undefined;
}

/** Options of {@link createMigrationEngine}. */
export interface MigrationEngineOptions {
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly planner: Planner;
  /** Where migrations are written; failover shares it. */
  readonly journal: MigrationJournal;
  /** The journal's store. */
  readonly store: KvStore;
  /** Locks and reservations, read to plan. */
  readonly records: MigrationRecords;
  /** Lifecycle operations: a migration waits for the VM's last one to have its outcome. */
  readonly operations: Pick<VmOperations, "inFlight">;
  readonly runners: RunnerRegistry;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long an orphan's hypervisor job may go on before settling aborts it (default 30 min). */
  readonly settleJobTimeoutMs?: number;
  /**
   * Told of each migration settled by reconciliation (for the audit trail),
   * at least once: resolves once the trail took it.
   */
  readonly onSettled?: (migration: Migration, tenant: string) => Promise<void> | void;
  /**
   * Told of a failover controller's restart that succeeded and that its
   * controller did not tell (it died first), at least once.
   */
  readonly onRestarted?: (migration: Migration, tenant: string) => Promise<void> | void;
  /** A tell of the trail not answered within this counts as refused (default 60 s). */
  readonly auditTellTimeoutMs?: number;
  /** Leaves an HA VM a migration could not start again, or only presumes running, to HA restore. */
  readonly markLostRunning?: MarkLostRunning;
  /** Cancels asked of a process that does not run the migration; without it, those are refused. */
  readonly cancels?: CancelRequests;
}

/** Plans, runs, watches, cancels and reconciles migrations. */
export interface MigrationEngine {
  /** Plans a migration for a caller; a VM the caller may not see plans like a missing one. */
  plan(
    req: Omit<MigrationRequest, "kind" | "requestedBy">,
    signal?: AbortSignal,
    options?: { failover?: boolean; avoid?: ReadonlyMap<string, string> },
  ): Promise<Plan & { vm?: VmInfo; revisions: ReadonlyMap<string, number> }>;
  /** Plans, reserves and starts a migration; resolves once it is running. */
  start(req: MigrationRequest, signal?: AbortSignal): Promise<Migration>;
  /** Resolves with the migration once it has finished. */
  wait(id: string, signal: AbortSignal): Promise<Migration>;
  /** The migration now, then each change, until it finishes. */
  watch(id: string, tenant: string | undefined, signal: AbortSignal): AsyncIterable<Migration>;
  cancel(id: string, tenant: string | undefined, signal?: AbortSignal): Promise<Migration>;
  get(id: string, tenant: string | undefined, signal?: AbortSignal): Promise<Migration>;
  /** Migrations the tenant (or, given a predicate, the tenants it accepts) may see, newest first. */
  list(
    tenant: string | undefined | ((tenant: string) => boolean),
    signal?: AbortSignal,
  ): Promise<Migration[]>;
  /**
   * Finishes or rolls back migrations whose runner is gone, from what the
   * hypervisors report. Returns how many it settled.
   */
  reconcile(signal?: AbortSignal): Promise<number>;
  /**
   * Clears the untold mark of the failover controller's restart `id` once
   * `telling` (its audit record) resolved (migration-settle-tell.ts).
   */
  told(id: string, telling: Promise<void>): Promise<void>;
  /** Aborts every migration this process runs (each rolls back): its runner lease was lost. */
  abortAll(reason: string): void;
  /** Stops every migration this process runs (each rolls back) and waits for them. */
  close(): Promise<void>;
}

/** Plan-and-reserve rounds before a start gives up with CONFLICT (parallel drains race for the same room). */
const MAX_BEGIN_ATTEMPTS = 25;

/**
 * Creates the {@link MigrationEngine}: plans and begins migrations, and
 * composes the runner (runs them), the settler (orphans of dead processes)
 * and the watch (following one) over the journal.
 */
export function createMigrationEngine(options: MigrationEngineOptions): MigrationEngine {
  const { inventory, executors, planner, journal, records, logger } = options;
  const { markLostRunning, cancels } = options;
  const runner = createMigrationRunner({
    inventory,
    executors,
    journal,
    logger,
    markLostRunning,
    cancelRequested: cancels?.requested,
  });
  const settler = createMigrationSettler({
    store: options.store,
    inventory,
    executors,
    journal,
    runners: options.runners,
    clock: options.clock,
    logger,
    jobTimeoutMs: options.settleJobTimeoutMs,
    // Only given one: without a trail, a settle is not marked at all.
    onSettled: told(options.onSettled),
    onRestarted: told(options.onRestarted),
    tellTimeoutMs: options.auditTellTimeoutMs,
    markLostRunning,
  });
  const follow = createMigrationWatch(journal, runner.runsHere);

  const { planFor } = createMigrationPlanning({
    inventory,
    planner,
    records,
    operations: options.operations,
  });
  const cancel = createMigrationCancel({
    journal,
    runner,
    follow,
    runners: options.runners,
    cancels,
  });

  return {
    async plan(req, signal, opts) {
      const { plan, vm, revisions } = await planFor(
        req,
        signal,
        opts?.failover ?? false,
        opts?.avoid,
      );
      return { ...plan, vm, revisions };
    },
    async start(req, signal) {
      return retryWhileLost(MAX_BEGIN_ATTEMPTS, async (attempt) => {
        const { plan, vm, revisions, recordRevision } = await planFor(req, signal);
        if (vm === undefined) throw new RpcError("VM_NOT_FOUND");
        if (!plan.allowed) {
          const inFlight = plan.checks.find((c) => c.name === "no_migration_in_flight");
          if (inFlight !== undefined && !inFlight.passed)
            throw new RpcError("MIGRATION_IN_PROGRESS");
          const operation = plan.checks.find((c) => c.name === "no_operation_in_flight");
          if (operation !== undefined && !operation.passed)
            throw new RpcError("MIGRATION_IN_PROGRESS", { message: operation.reason });
          const failed = plan.checks.find((c) => !c.passed);
          const noTarget = plan.target === "" && (req.target ?? "") === "";
          throw new RpcError(noTarget ? "NO_TARGET" : "MIGRATION_NOT_ALLOWED", {
            message: `${noTarget ? "no node can take this vm now" : "migration not allowed"}: ${failed?.reason ?? "a check failed"}`,
          });
        }
        const job = journal.newJob({
          vm,
          source: plan.source,
          target: plan.target,
          live: plan.live,
          allowDowntime: req.allowDowntime,
          kind: jobKindOf(req.kind),
          requestedBy: req.requestedBy,
        });
        // The planner read the VM's stale copies from a view; its record's revision, compared
        // in begin's txn, makes sure none was noted on the target since.
        if (
          await journal.begin(job, revisions.get(plan.target) ?? 0, signal, [
            inventory.vmRecords.unchanged(vm.id, recordRevision),
          ])
        )
          return migrationOf(runner.launch(job, vm));
        // Another start took the room or the vm first: plan again, after a moment (not after
        // the last round: nothing follows it).
        if (attempt + 1 < MAX_BEGIN_ATTEMPTS) await sleep(Math.random() * 10 * (attempt + 1));
        return LOST;
      });
    },
    wait: (id, signal) => follow.wait(id, signal),
    watch: (id, tenant, signal) => follow.watch(id, tenant, signal),
    cancel,
    async get(id, tenant, signal) {
      return migrationOf(await follow.load(id, tenant, signal));
    },
    async list(tenant, signal) {
      return (await journal.list(signal))
        .filter(({ job }) =>
          typeof tenant === "function"
            ? tenant(job.tenant)
            : tenant === undefined || job.tenant === tenant,
        )
        .map(({ job }) => migrationOf(job))
        .reverse();
    },
    reconcile: (signal) => settler.reconcile(signal),
    told: settler.told,
    abortAll: (reason) => runner.abortAll(reason),
    close: () => runner.close(),
  };
}

/** A hearing of migrations as the settler's, of jobs; undefined when there is none. */
function told(
  hear: ((m: Migration, tenant: string) => Promise<void> | void) | undefined,
): ((job: MigrationJob) => Promise<void> | void) | undefined {
  return hear === undefined ? undefined : (job) => hear(migrationOf(job), job.tenant);
}
