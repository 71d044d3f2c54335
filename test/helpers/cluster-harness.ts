import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  type ClusterRuntime,
  createInventory,
  createLocalExecutors,
  createMigrationEngine,
  createMigrationJournal,
  createMigrationRecords,
  createPlanner,
  createVmOperations,
  type FailoverDecision,
  type Inventory,
  type MigrationEngineOptions,
  type MigrationJournal,
  type MigrationRecords,
  type ReplicaLookup,
  readPlacement,
  startClusterRuntime,
} from "../../src/cluster/index.js";
import {
  type CallContext,
  createManualClock,
  type Logger,
  type ManualClock,
  silentLogger,
} from "../../src/core/index.js";
import {
  createSimulation,
  type HypervisorDriver,
  type RecoveringDriver,
  type Simulation,
} from "../../src/drivers/index.js";
import { VmRecordSchema } from "../../src/gen/debvisor/store/v1/records_pb.js";
import type { Migration } from "../../src/gen/debvisor/v1/migration_pb.js";
import type { Health } from "../../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../../src/gen/debvisor/v1/storage_pb.js";
import type { VmInfo, VmState } from "../../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../../src/store/index.js";

/** A control plane over a simulated cluster in this process: real SQLite store, real timers for migrations, a manual clock for liveness. */
export interface ClusterHarness {
  readonly store: KvStore;
  readonly clock: ManualClock;
  readonly sim: Simulation;
  readonly inventory: Inventory;
  readonly runtime: ClusterRuntime;
  readonly dir: string;
  /** The most migrations the simulated hypervisors ran at once so far. */
  maxConcurrentMigrations(): number;
  /** Every decision of the failover controller, in order. */
  readonly decisions: FailoverDecision[];
  /** Every stop the control plane sent a node's hypervisor, as `node/vm`, in order. */
  readonly stops: string[];
  /** Delivers one heartbeat from every node that can send one. */
  beat(): Promise<void>;
  close(): Promise<void>;
}

const consoleLogger = {
  debug: () => {},
  info: () => {},
  warn: (o: object, m: string) => console.error("WARN", m, o),
  error: (o: object, m: string) => console.error("ERROR", m, o),
} as unknown as Logger;

/** Whether every disk of the VM is on RBD (the backend that fences: exclusive lock, blocklist). */
export const onRbd = (vm: VmInfo) =>
  vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

export const HARNESS_TTL_MS = 3000;
export const HARNESS_FENCE_MS = 5000;

/** A replica catalogue where every ZFS dataset is replicated to each of `nodeIds`. */
export function replicatedTo(nodeIds: readonly string[]): ReplicaLookup {
  return { hasReplica: async (_dataset, nodeId) => nodeIds.includes(nodeId) };
}

/** The first VM the inventory lists that satisfies `pred`. */
export async function pickVm(inventory: Inventory, pred: (vm: VmInfo) => boolean): Promise<VmInfo> {
  const vm = (await inventory.listVms()).find(pred);
  if (vm === undefined) throw new Error("no simulated vm matches; change the seed or the shape");
  return vm;
}

export async function startClusterHarness(options: {
  nodes?: number;
  vmsPerNode?: number;
  migrationMs?: number;
  replicas?: ReplicaLookup;
  failover?: boolean;
  /** Share a store (another "daemon" of the same cluster); the caller closes it. */
  store?: KvStore;
  /** Share the simulated hypervisors with another harness. */
  sim?: Simulation;
  /** This "daemon's" clock (default: a manual clock at a fixed date). */
  clock?: ManualClock;
  dir?: string;
  /** How long an orphan's hypervisor job may go on before settling aborts it (default 30 min). */
  settleJobTimeoutMs?: number;
  /** How long a failover waits for its target's restart (default: the failover's own). */
  recoverTimeoutMs?: number;
  /** Rewrites a node's heartbeat before it is delivered (a report the simulation cannot make). */
  report?: (nodeId: string, health: Health) => Health;
  /** Wraps each node's driver as this "daemon" reaches it (a call held, say). */
  driver?: (driver: RecoveringDriver) => RecoveringDriver;
  /** The audit trail's hearing of the failover controller's decisions, after `decisions` has them. */
  onDecision?: (d: FailoverDecision) => Promise<void> | void;
  /** The audit trail's hearing of a restart told again (given: restarts are marked untold until told). */
  onRestartUntold?: (d: FailoverDecision) => Promise<void> | void;
  /** A tell of the trail not answered within this counts as refused (default 60 s). */
  auditTellTimeoutMs?: number;
  /** The audit trail's hearing of migrations settled by reconciliation (as the daemon's). */
  onSettled?: (migration: Migration, tenant: string) => Promise<void> | void;
}): Promise<ClusterHarness> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "dv-cluster-"));
  const store =
    options.store ?? createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const clock = options.clock ?? createManualClock(Date.UTC(2026, 10, 22, 8, 0, 0));
  const sim =
    options.sim ??
    createSimulation({
      nodes: options.nodes ?? 4,
      vmsPerNode: options.vmsPerNode ?? 4,
      clock,
      migrationMs: options.migrationMs ?? 300,
      migrationSteps: 10,
      fenceDelayMs: HARNESS_FENCE_MS,
      stateFile: join(dir, "simulation.json"),
    });
  const inventory = createInventory({
    store,
    clock,
    heartbeatTtlMs: HARNESS_TTL_MS,
    fenceDelayMs: HARNESS_FENCE_MS,
  });
  for (const node of sim.nodes) await inventory.register(node, "simulation");
  const beat = async () => {
    for (const node of sim.nodes) {
      const id = node.id?.id ?? "";
      const h = sim.heartbeat(id);
      if (h === undefined) continue;
      await inventory.heartbeat(options.report?.(id, h) ?? h);
      sim.delivered(id);
    }
  };
  await beat();
  const decisions: FailoverDecision[] = [];
  // Migrations as the hypervisors see them, to check limits from their side.
  let migrating = 0;
  let maxMigrating = 0;
  const stops: string[] = [];
  const counted = (driver: RecoveringDriver | undefined): RecoveringDriver | undefined =>
    driver === undefined
      ? undefined
      : {
          ...driver,
          stop(vmId, o) {
            stops.push(`${driver.nodeId}/${vmId}`);
            return driver.stop(vmId, o);
          },
          async migrate(vmId, to, options) {
            migrating++;
            maxMigrating = Math.max(maxMigrating, migrating);
            try {
              await driver.migrate(vmId, to, options);
            } finally {
              migrating--;
            }
          },
        };
  const runtime = await startClusterRuntime({
    store,
    inventory,
    executors: createLocalExecutors((id) => {
      const d = counted(sim.driver(id));
      return d === undefined || options.driver === undefined ? d : options.driver(d);
    }),
    replicas: options.replicas ?? { hasReplica: async () => false },
    clock,
    logger: process.env.DV_TEST_LOG ? consoleLogger : silentLogger,
    fenceDelayMs: HARNESS_FENCE_MS,
    runnerLeaseMs: 2000,
    settleJobTimeoutMs: options.settleJobTimeoutMs,
    onSettled: options.onSettled,
    auditTellTimeoutMs: options.auditTellTimeoutMs,
    failover: options.failover
      ? {
          intervalMs: 3_600_000,
          restartLimit: 2,
          restartWindowMs: 3_600_000,
          recoverTimeoutMs: options.recoverTimeoutMs,
          onDecision: (d) => {
            decisions.push(d);
            return options.onDecision?.(d);
          },
          onRestartUntold:
            options.onRestartUntold === undefined
              ? undefined
              : async (d) => {
                  await options.onRestartUntold?.(d);
                },
        }
      : undefined,
  });
  return {
    store,
    clock,
    sim,
    inventory,
    runtime,
    dir,
    decisions,
    stops,
    maxConcurrentMigrations: () => maxMigrating,
    beat,
    async close() {
      await runtime.close();
      sim.close();
      inventory.close();
      if (options.store === undefined) await store.close();
    },
  };
}

/**
 * Another daemon's harness on `first`'s store, simulation and clock, its
 * failover controller on: two control-plane processes of one cluster.
 */
export function startPeerHarness(
  first: ClusterHarness,
  nodes: number,
  vmsPerNode: number,
): Promise<ClusterHarness> {
  return startClusterHarness({
    nodes,
    vmsPerNode,
    failover: true,
    store: first.store,
    sim: first.sim,
    clock: first.clock,
  });
}

/** Makes a VM managed with `desiredState`, as its record places it (else on the node reporting it). */
export async function manageVm(store: KvStore, vm: VmInfo, desiredState: VmState): Promise<void> {
  const read = await readPlacement(store, vm.id);
  const rec = create(VmRecordSchema, {
    ...(read.rec ?? { id: vm.id }),
    id: vm.id,
    nodeId: read.rec?.nodeId || (vm.nodeId?.id ?? ""),
    managed: true,
    desiredState,
  });
  await store.put(`vms/${vm.id}`, encodeMessage(VmRecordSchema, rec));
}

/** The context of a cluster-wide caller, for calling the VM lifecycle directly. */
export function adminContext(): CallContext {
  return {
    principal: { id: "admin" },
    signal: new AbortController().signal,
    log: silentLogger,
  } as unknown as CallContext;
}

/**
 * A migration engine of a process of its own (runner `runnerId`) over the
 * harness's store and inventory, reaching the hypervisors through
 * `driverFor` (the simulation's drivers, or wrappers of them): for tests of
 * what one runner does that the harness's own runtime must not do. No
 * replicas; `journal` replaces the runner's own, `overrides` any other part.
 */
export function engineOn(
  h: Pick<ClusterHarness, "store" | "inventory" | "clock">,
  driverFor: (id: string) => HypervisorDriver | undefined,
  options: {
    runnerId?: string;
    progressSaveMs?: number;
    journal?: (records: MigrationRecords) => MigrationJournal;
    overrides?: Partial<MigrationEngineOptions>;
  } = {},
) {
  const runnerId = options.runnerId ?? "me";
  const records = createMigrationRecords(h.store);
  const journal =
    options.journal?.(records) ??
    createMigrationJournal({
      records,
      runnerId,
      clock: h.clock,
      progressSaveMs: options.progressSaveMs,
    });
  const executors = createLocalExecutors(driverFor);
  const engine = createMigrationEngine({
    store: h.store,
    inventory: h.inventory,
    executors,
    planner: createPlanner({ executors, replicas: { hasReplica: async () => false } }),
    journal,
    records,
    operations: createVmOperations(h.store, h.clock),
    runners: {
      id: runnerId,
      isAlive: async () => true,
      publishServing: () => {},
      close: async () => {},
    },
    clock: h.clock,
    logger: silentLogger,
    ...options.overrides,
  });
  return { engine, records, journal };
}

/** The simulation's drivers, `nodeId`'s with the methods `change` gives over its own. */
export function driversWith(
  h: Pick<ClusterHarness, "sim">,
  nodeId: string,
  change: (own: HypervisorDriver) => Partial<HypervisorDriver>,
): (id: string) => HypervisorDriver | undefined {
  return (id) => {
    const d = h.sim.driver(id);
    if (d === undefined || id !== nodeId) return d;
    return Object.assign(Object.create(d) as HypervisorDriver, change(d));
  };
}
