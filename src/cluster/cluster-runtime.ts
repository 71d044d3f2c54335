import type { Clock, Logger } from "../core/index.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import type { KvStore } from "../store/index.js";
import { type EventSink, NO_EVENTS } from "./event-recorder.js";
import type { Executors } from "./executors.js";
import type { FailoverDeps } from "./failover.js";
import {
  type FailoverController,
  type FailoverDecision,
  startFailoverController,
} from "./failover-controller.js";
import { restartDecisionOf } from "./failover-decisions.js";
import { noteSelfFenced } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";
import { createCancelRequests } from "./migration-cancel-requests.js";
import { createMigrationEngine, type MigrationEngine } from "./migration-engine.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createPlanner, type ReplicaLookup } from "./migration-planner.js";
import { createMigrationRecords } from "./migration-records.js";
import { startReadinessEvents } from "./readiness-events.js";
import { newRunnerId, type RunnerRegistry, registerRunner } from "./runner-registry.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";
import { createVmOperations } from "./vm-operations.js";

/** Options of {@link startClusterRuntime}. */
export interface ClusterRuntimeOptions {
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly replicas: ReplicaLookup;
  readonly clock: Clock;
  readonly logger: Logger;
  /** NOT_READY time after which a node's VMs may restart elsewhere. */
  readonly fenceDelayMs: number;
  readonly cpuOvercommit?: number;
  readonly memoryOvercommit?: number;
  /** TTL of this process's runner lease; orphaned migrations are settled after it (default 10 s). */
  readonly runnerLeaseMs?: number;
  /** The serial of the server certificate this process serves, published in its runner key. */
  readonly servingSerial?: () => string | undefined;
  /** How long an orphaned migration's hypervisor job may go on before settling aborts it (default 30 min). */
  readonly settleJobTimeoutMs?: number;
  /** Told of each migration settled after its runner died (for the audit trail). */
  readonly onSettled?: (migration: Migration, tenant: string) => Promise<void> | void;
  /** A tell of the trail not answered within this counts as refused (default 60 s; tests). */
  readonly auditTellTimeoutMs?: number;
  /** Where migrations, failovers and node readiness changes are told (default: nowhere). */
  readonly events?: EventSink;
  /** How often node readiness is looked at for its events (default 2000 ms). */
  readonly readinessEventsMs?: number;
  /** The automatic failover controller; omit to run none. */
  readonly failover?: {
    readonly intervalMs: number;
    readonly restartLimit: number;
    readonly restartWindowMs: number;
    /** HA VMs a pass works on at once (default 4). */
    readonly maxParallel?: number;
    /** How long a failover waits for its target's restart (default 2 min). */
    readonly recoverTimeoutMs?: number;
    readonly onDecision?: (d: FailoverDecision) => Promise<void> | void;
    /**
     * The audit trail's hearing of a stale copy's removal: resolves once the
     * trail took it. Given only with a trail: each removal is then kept as an
     * intent until told (audit-intents.ts); without, nothing is kept.
     */
    readonly onStaleCopy?: (d: StaleCopyDecision) => Promise<void> | void;
    /**
     * The audit trail's hearing of a restart told again (its controller died
     * before its trail took it, or the trail refused it): resolves once the
     * trail took it. Given only with a trail: a restart is then marked untold
     * until told (migration-settle-tell.ts); without, nothing is marked.
     */
    readonly onRestartUntold?: (d: FailoverDecision) => Promise<void>;
  };
}

/** The migration engine, failover and their background loops, running. */
export interface ClusterRuntime {
  readonly engine: MigrationEngine;
  readonly failover: FailoverDeps;
  readonly controller: FailoverController | undefined;
  /** This process in the runner registry (also the claimer of the operations it runs itself). */
  readonly runners: RunnerRegistry;
  /** Stops the loops, rolls back migrations this process runs, releases its leases. */
  close(): Promise<void>;
}

/**
 * Registers this process as a runner, settles migrations orphaned by a
 * previous process (now and every half lease), and starts the failover
 * controller.
 */
export async function startClusterRuntime(options: ClusterRuntimeOptions): Promise<ClusterRuntime> {
  const { store, inventory, executors, clock, logger } = options;
  const leaseMs = options.runnerLeaseMs ?? 10_000;
  let engineRef: MigrationEngine | undefined;
  const runners = await registerRunner(
    store,
    newRunnerId(),
    leaseMs,
    logger,
    () => engineRef?.abortAll("runner lease lost"),
    options.servingSerial,
  );
  const records = createMigrationRecords(store);
  const planner = createPlanner({
    executors,
    replicas: options.replicas,
    cpuOvercommit: options.cpuOvercommit,
    memoryOvercommit: options.memoryOvercommit,
  });
  const journal = createMigrationJournal({
    records,
    runnerId: runners.id,
    clock,
    events: options.events,
  });
  const engine = createMigrationEngine({
    store,
    inventory,
    executors,
    planner,
    journal,
    records,
    operations: createVmOperations(store, clock),
    // Stamped 0 unless a report is named: any later report of it running says it survived
    // (restore clears the mark).
    markLostRunning: (nodeId, vmId, reportMs = 0) => noteSelfFenced(store, nodeId, vmId, reportMs),
    cancels: createCancelRequests(store),
    runners,
    clock,
    logger,
    settleJobTimeoutMs: options.settleJobTimeoutMs,
    onSettled: options.onSettled,
    onRestarted: onRestarted(options.failover?.onRestartUntold),
    auditTellTimeoutMs: options.auditTellTimeoutMs,
  });
  engineRef = engine;
  const failover: FailoverDeps = {
    engine,
    inventory,
    executors,
    journal,
    store,
    logger,
    fenceDelayMs: options.fenceDelayMs,
    events: options.events,
  };
  const readiness = startReadinessEvents({
    store,
    inventory,
    events: options.events ?? NO_EVENTS,
    logger,
    fenceDelayMs: options.fenceDelayMs,
    intervalMs: options.readinessEventsMs,
  });
  const reconcile = () =>
    engine
      .reconcile()
      .catch((err: unknown) => logger.warn({ err }, "reconciling migrations failed"));
  await reconcile();
  const timer = setInterval(() => void reconcile(), Math.max(200, Math.floor(leaseMs / 2)));
  timer.unref();
  const controller =
    options.failover === undefined
      ? undefined
      : startFailoverController({
          ...failover,
          ...options.failover,
          store,
          clock,
          runnerId: runners.id,
          leaseTtlMs: leaseMs,
          markRestarts: options.failover.onRestartUntold !== undefined,
          runners,
          auditTellTimeoutMs: options.auditTellTimeoutMs,
        });
  return {
    engine,
    failover,
    controller,
    runners,
    async close() {
      clearInterval(timer);
      readiness.close();
      await controller?.close();
      await engine.close();
      await runners.close();
    },
  };
}

/** The hearing of a controller restart left untold, from its record (none without one). */
function onRestarted(
  hear: ((d: FailoverDecision) => Promise<void>) | undefined,
): ((m: Migration, tenant: string) => Promise<void>) | undefined {
  return hear === undefined ? undefined : (m, tenant) => hear(restartDecisionOf(m, tenant));
}
