import type { AuditLog } from "../audit/index.js";
import {
  type ClusterRuntime,
  createInventory,
  createLocalExecutors,
  type DriverReporter,
  type Executors,
  type Inventory,
  startClusterRuntime,
  startDriverReporter,
} from "../cluster/index.js";
import { type Clock, type Logger, monotonicClock, systemClock } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { type ClusterEvents, startClusterEvents } from "./cluster-events.js";
import { type ClusterMetrics, createClusterMetrics } from "./cluster-metrics.js";
import type { Config } from "./config-schema.js";
import { libvirtNodes } from "./libvirt-nodes.js";
import type { Metrics } from "./metrics.js";
import type { OpenedResources } from "./opened-resources.js";
import { type DaemonSimulation, startSimulation } from "./simulation-setup.js";
import { type StorageStack, startStorage } from "./storage-setup.js";
import { failoverAuditFields, settledAuditFields, staleCopyAuditFields } from "./system-audit.js";

/** What the cluster part needs from the daemon. */
export interface ClusterSetup {
  readonly config: Config;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly closing: AbortSignal;
  readonly metrics: Metrics;
  readonly audit: AuditLog | undefined;
  readonly resources: OpenedResources;
}

/** The running cluster: inventory, simulation, storage and the migration/failover runtime. */
export interface DaemonCluster extends DaemonSimulation {
  readonly inventory: Inventory;
  readonly storage: StorageStack;
  readonly clusterMetrics: ClusterMetrics;
  readonly runtime: ClusterRuntime;
  /** The event log EventService reads, and the recorder the cluster tells. */
  readonly events: ClusterEvents;
  /** Nodes this daemon drives with its own drivers (simulation, libvirt.nodes), and how. */
  readonly localNodeIds: () => readonly string[];
  readonly executors: Executors;
  /** Reports one local node's state now (after an operation on it). */
  report(nodeId: string): Promise<void>;
}

/**
 * Builds the inventory, starts the simulation when enabled, the storage stack
 * (with its replication scheduler), libvirt reporting and the cluster runtime
 * (runner registration, orphaned migrations, failover controller).
 */
export async function startCluster(setup: ClusterSetup): Promise<DaemonCluster> {
  const { config, store, clock, logger, closing, metrics, audit, resources } = setup;
  const events = startClusterEvents({ config, store, clock, logger, registry: metrics.registry });
  // Closed after everything that tells events (opened later, closed sooner), before the store.
  resources.push("event recorder", () => events.recorder.close());
  const inventory = createInventory({
    store,
    clock,
    heartbeatTtlMs: config.cluster.heartbeatIntervalMs * config.cluster.heartbeatMissedIntervals,
    reportClockSkewMs: config.cluster.reportClockSkewMs,
    events: events.recorder,
    fenceDelayMs: config.cluster.fenceDelayMs,
    // Liveness on one clock that never steps (SQLite: this daemon's; etcd: the store's TTLs).
    livenessClock: clock === systemClock ? monotonicClock : clock,
  });
  events.useInventory(inventory);
  resources.push("inventory", () => inventory.close());
  const { sim, simNodeIds, simBeat } = await startSimulation({
    config,
    inventory,
    clock,
    logger,
    resources,
  });
  const storage = await startStorage({
    config,
    store,
    clock,
    inventory,
    logger,
    closing,
    simulatedNodeIds: simNodeIds,
    events: events.recorder,
  });
  resources.push("storage", () => storage.close());
  const libvirt = libvirtNodes(config, logger);
  const executors = createLocalExecutors(
    (id) => sim?.driver(id) ?? libvirt.get(id)?.driver,
    (id) => libvirt.get(id)?.uri ?? "",
  );
  let reporter: DriverReporter | undefined;
  if (libvirt.size > 0) {
    reporter = await startDriverReporter({
      inventory,
      nodes: [...libvirt.values()],
      clock,
      logger,
      intervalMs: config.libvirt.reportIntervalMs,
    });
    const started = reporter;
    resources.push("libvirt reporter", () => started.close());
  }
  const clusterMetrics = createClusterMetrics({
    registry: metrics.registry,
    store,
    inventory,
    clock,
    logger,
    closing,
  });
  const runtime = await startClusterRuntime({
    store,
    inventory,
    executors,
    replicas: storage.replicas,
    clock,
    logger,
    fenceDelayMs: config.cluster.fenceDelayMs,
    cpuOvercommit: config.cluster.cpuOvercommit,
    memoryOvercommit: config.cluster.memoryOvercommit,
    runnerLeaseMs: config.cluster.runnerLeaseMs,
    events: events.recorder,
    onSettled: (m) => {
      audit
        ?.append(settledAuditFields(m))
        .catch((err: unknown) => logger.error({ err }, "settled migration not audited"));
    },
    failover: config.cluster.failover.enabled
      ? {
          ...config.cluster.failover,
          onDecision: (d) => {
            clusterMetrics.failoverDecision(d);
            audit
              ?.append(failoverAuditFields(d))
              .catch((err: unknown) => logger.error({ err }, "failover decision not audited"));
          },
          onStaleCopy: (d) => {
            audit
              ?.append(staleCopyAuditFields(d))
              .catch((err: unknown) => logger.error({ err }, "stale copy removal not audited"));
          },
        }
      : undefined,
  });
  resources.push("cluster runtime", () => runtime.close());
  return {
    inventory,
    sim,
    simNodeIds,
    storage,
    clusterMetrics,
    runtime,
    events,
    executors,
    localNodeIds: () => [...simNodeIds, ...libvirt.keys()],
    async report(nodeId) {
      if (simNodeIds.includes(nodeId)) await simBeat?.(nodeId);
      else await reporter?.report();
    },
  };
}
