import type { AuditLog } from "../audit/index.js";
import {
  type ClusterRuntime,
  createAgentExecutors,
  createAgentOperations,
  createInventory,
  createLocalExecutors,
  type DriverReporter,
  type Executors,
  type Inventory,
  startClusterRuntime,
  startDriverReporter,
} from "../cluster/index.js";
import type { OpenedResources } from "../core/index.js";
import { type Clock, type Logger, monotonicClock, systemClock } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { type ClusterEvents, startClusterEvents } from "./cluster-events.js";
import { type ClusterMetrics, createClusterMetrics } from "./cluster-metrics.js";
import type { Config } from "./config-schema.js";
import { claimDevNodes, type DevAgentsPlan, planDevAgents } from "./dev-agents.js";
import type { DevEnvironment } from "./dev-environment.js";
import { libvirtNodes } from "./libvirt-nodes.js";
import type { Metrics } from "./metrics.js";
import { type DaemonSimulation, startSimulation } from "./simulation-setup.js";
import { type StorageStack, startStorage } from "./storage-setup.js";
import { failoverAuditFields, settledAuditFields, staleCopyAuditFields } from "./system-audit.js";
import type { TlsFiles } from "./tls-setup.js";

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
  /** Dev mode's files, in dev mode. */
  readonly dev?: DevEnvironment;
  /** The server certificate this daemon serves now, published for the other daemons (again on each change). */
  readonly served?: Pick<TlsFiles, "servingSerial" | "onServingChange">;
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
  /** Dev mode with dev.agents: the agent nodes to start once the server listens. */
  readonly devAgentsPlan: DevAgentsPlan | undefined;
}

/**
 * Builds the inventory, starts the simulation when enabled, the storage stack
 * (with its replication scheduler), libvirt reporting and the cluster runtime
 * (runner registration, orphaned migrations, failover controller).
 */
export async function startCluster(setup: ClusterSetup): Promise<DaemonCluster> {
  const { config, store, clock, logger, closing, metrics, audit, resources, served } = setup;
  const events = startClusterEvents({ config, store, clock, logger, registry: metrics.registry });
  // Closed after everything that tells events (opened later, closed sooner), before the store.
  resources.push("event recorder", () => events.recorder.close());
  const inventory = createInventory({
    store,
    clock,
    heartbeatTtlMs: config.cluster.heartbeatIntervalMs * config.cluster.heartbeatMissedIntervals,
    reportClockSkewMs: config.cluster.reportClockSkewMs,
    reportRefreshMs: config.cluster.reportRefreshMs,
    events: events.recorder,
    fenceDelayMs: config.cluster.fenceDelayMs,
    // Liveness on one clock that never steps (SQLite: this daemon's; etcd: the store's TTLs).
    livenessClock: clock === systemClock ? monotonicClock : clock,
  });
  events.useInventory(inventory);
  resources.push("inventory", () => inventory.close());
  const { dev } = setup;
  const sim0 = await startSimulation({
    config,
    inventory,
    clock,
    logger,
    resources,
    beforeRegister:
      dev === undefined
        ? undefined
        : (ids) => claimDevNodes(store, inventory, ids, () => "simulation", logger),
  });
  const { sim, simBeat } = sim0;
  let simNodeIds = sim0.simNodeIds;
  // Dev mode's nodes as agent processes: each its own simulated hypervisor and directory.
  let devAgentsPlan: DevAgentsPlan | undefined;
  if (dev !== undefined && config.dev.agents.enabled && sim === undefined) {
    devAgentsPlan = await planDevAgents(config, dev, inventory, clock.now());
    simNodeIds = [...devAgentsPlan.nodeIds];
    await claimDevNodes(store, inventory, simNodeIds, (id) => id, logger);
  }
  const storage = await startStorage({
    config,
    store,
    clock,
    inventory,
    logger,
    closing,
    simulatedNodeIds: simNodeIds,
    events: events.recorder,
    simulatedVms: devAgentsPlan?.vms,
  });
  resources.push("storage", () => storage.close());
  const libvirt = libvirtNodes(config, logger);
  // Nodes this process drives itself first; any other node through its agent.
  const executors = createAgentExecutors({
    store,
    inventory,
    operations: createAgentOperations(store, clock),
    clock,
    logger,
    closing,
    downGraceMs: config.cluster.fenceDelayMs,
    // Under settling's own 60 s bound on a pass, which would end the wait as a failure.
    reportWaitMs: Math.min(30_000, 2 * config.cluster.heartbeatIntervalMs),
    local: createLocalExecutors(
      (id) => sim?.driver(id) ?? libvirt.get(id)?.driver,
      (id) => libvirt.get(id)?.uri ?? "",
    ),
  });
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
    servingSerial: served === undefined ? undefined : () => served.servingSerial(),
    settleJobTimeoutMs: config.cluster.settleJobTimeoutMs,
    events: events.recorder,
    // Resolves once the trail took it: a settle the trail refused is told again by a later
    // reconcile pass, not logged and lost. None without a trail: a daemon with nothing to
    // tell it to must not take (and clear) another's untold settle.
    onSettled:
      audit === undefined ? undefined : (m, tenant) => audit.append(settledAuditFields(m, tenant)),
    failover: config.cluster.failover.enabled
      ? {
          ...config.cluster.failover,
          // Each resolves once the trail took the record (a refusal is logged by the
          // controller; a restart's is told again by a reconcile pass).
          onDecision: async (d) => {
            clusterMetrics.failoverDecision(d);
            await audit?.append(failoverAuditFields(d));
          },
          // None without a trail: no removal is then kept as an intent (none could tell it).
          onStaleCopy:
            audit === undefined ? undefined : (d) => audit.append(staleCopyAuditFields(d)),
          // A restart told again: to the trail only (counted once, by the controller).
          onRestartUntold:
            audit === undefined ? undefined : (d) => audit.append(failoverAuditFields(d)),
        }
      : undefined,
  });
  resources.push("cluster runtime", () => runtime.close());
  // A renewal or a reload: the other daemons learn the serial served here now.
  if (served !== undefined)
    resources.push(
      "serving serial publication",
      served.onServingChange(() => runtime.runners.publishServing()),
    );
  return {
    inventory,
    sim,
    simNodeIds,
    storage,
    clusterMetrics,
    runtime,
    events,
    executors,
    // The embedded simulation's nodes, not dev agents' (those are driven through their agents).
    localNodeIds: () => [...sim0.simNodeIds, ...libvirt.keys()],
    async report(nodeId) {
      if (sim0.simNodeIds.includes(nodeId)) await simBeat?.(nodeId);
      else await reporter?.report();
    },
    devAgentsPlan,
  };
}
