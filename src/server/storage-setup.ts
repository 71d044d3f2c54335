import { createHash } from "node:crypto";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  type AgentHub,
  createAgentStorage,
  createReplicaCatalog,
  createReplicationJobs,
  createReplicationRunner,
  createReplicationScheduler,
  diskNode,
  type EventSink,
  type Inventory,
  type ReplicaCatalog,
  type ReplicationJobs,
  type ReplicationRunner,
  type ReplicationScheduler,
} from "../cluster/index.js";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import {
  createRbdDriver,
  createSimulatedStorage,
  createStorageRouter,
  createZfsDriver,
  type SimulatedDataset,
  type StorageDriver,
  stampedSnapshotName,
} from "../drivers/index.js";
import { ReplicationJobRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import type { Config } from "./config-schema.js";

/** The daemon's storage: the driver, replication runner and scheduler, and the replica catalog. */
export interface StorageStack {
  readonly storage: StorageDriver;
  readonly runner: ReplicationRunner;
  readonly scheduler: ReplicationScheduler | undefined;
  /** Which nodes hold replicated copies of a ZFS dataset (for migration planning). */
  readonly replicas: ReplicaCatalog;
  /** Stops the scheduler; resolves when its runs have ended. */
  close(): Promise<void>;
  /** From now on, storage of nodes whose agents run it goes through `hub` (sends relayed by it). */
  useAgents(hub: AgentHub): void;
}

/** Options of {@link startStorage}. */
export interface StorageStackOptions {
  readonly config: Config;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly inventory: Inventory;
  readonly logger: Logger;
  /** The daemon's shutdown signal: aborts replication runs. */
  readonly closing: AbortSignal;
  /** Nodes of the in-process simulation; when any, storage is simulated from their VMs' disks. */
  readonly simulatedNodeIds: readonly string[];
  /** Where replication runs are told. */
  readonly events?: EventSink;
  /** The simulated nodes' VMs when the inventory does not hold them yet (dev mode's agents). */
  readonly simulatedVms?: readonly VmInfo[];
}

const GIB = 1024 ** 3;
const DAY_MS = 86_400_000;

/**
 * Builds the storage driver (simulated from the simulation's VMs, else ZFS
 * and RBD as configured), the replication runner shared by the API and the
 * scheduler, and starts the scheduler unless configured off. In a simulated
 * cluster, every ZFS disk gets a replication job to the next node.
 */
export async function startStorage(options: StorageStackOptions): Promise<StorageStack> {
  const { config, store, clock, logger } = options;
  const jobs = createReplicationJobs(store);
  let storage: StorageDriver;
  let seed: (() => Promise<void>) | undefined;
  if (options.simulatedNodeIds.length > 0) {
    const nodes = [...options.simulatedNodeIds].sort();
    const vms = (options.simulatedVms ?? (await options.inventory.listVms())).filter((vm) =>
      nodes.includes(vm.nodeId?.id ?? ""),
    );
    storage = createSimulatedStorage({
      datasets: simulatedDatasets(vms, clock.now()),
      clock,
      bytesPerSecond: config.storage.simulatedBytesPerSecond,
      // Beside the simulated hypervisors' world, so both survive a restart together.
      stateFile: config.dev.enabled
        ? join(config.dev.dataDir, "simulated-storage.json")
        : config.simulation.stateFile === undefined
          ? undefined
          : `${config.simulation.stateFile}.storage`,
    });
    seed = () => seedReplicationJobs(jobs, vms, nodes, clock.now());
  } else {
    const { zfs, rbd } = config.storage;
    storage = createStorageRouter({
      zfs: zfs.enabled
        ? createZfsDriver({
            command: zfs.command,
            localNode: zfs.localNode,
            timeoutMs: zfs.timeoutMs,
            sendTimeoutMs: zfs.sendTimeoutMs,
          })
        : undefined,
      rbd: rbd.enabled
        ? createRbdDriver({
            command: rbd.command,
            timeoutMs: rbd.timeoutMs,
            globalArgs: [
              ...(rbd.cephId === undefined ? [] : ["--id", rbd.cephId]),
              ...(rbd.cephConf === undefined ? [] : ["--conf", rbd.cephConf]),
              ...(rbd.keyring === undefined ? [] : ["--keyring", rbd.keyring]),
            ],
          })
        : undefined,
    });
  }
  // Calls for nodes whose agents run storage go to those agents once the hub is attached.
  let agents: AgentHub | undefined;
  storage = createAgentStorage({ local: storage, hub: () => agents, logger });
  const repl = config.storage.replication;
  const runner = createReplicationRunner({
    store,
    jobs,
    storage,
    clock,
    logger,
    lockTtlMs: repl.lockTtlMs,
    retryBaseMs: repl.retryBaseMs,
    retryMaxMs: repl.retryMaxMs,
    closing: options.closing,
    events: options.events,
    // Every VM naming the disk, on one node; CONFLICT (nothing sent) when they are on several.
    ownerNode: (dataset, signal) => diskNode(options.inventory, dataset, signal),
  });
  await seed?.();
  const scheduler = repl.scheduler
    ? createReplicationScheduler({
        jobs,
        runner,
        clock,
        logger,
        tickMs: repl.tickMs,
        maxConcurrentRuns: repl.maxConcurrentRuns,
      })
    : undefined;
  scheduler?.start();
  return {
    storage,
    runner,
    scheduler,
    replicas: createReplicaCatalog({ store }),
    close: async () => scheduler?.stop(),
    useAgents: (hub) => {
      agents = hub;
    },
  };
}

/** A stable number from a text, so the same VM always gets the same disk. */
function hashOf(text: string): number {
  return createHash("sha256").update(text).digest().readUInt32BE(0);
}

/** One dataset per simulated VM disk: 2-16 GiB, with 3-7 daily snapshots at midnight UTC. */
export function simulatedDatasets(vms: readonly VmInfo[], nowMs: number): SimulatedDataset[] {
  const out: SimulatedDataset[] = [];
  for (const vm of vms) {
    for (const disk of vm.disks) {
      const h = hashOf(`${disk.pool}/${disk.name}`);
      const days = 3 + (h % 5);
      const snapshots = Array.from({ length: days }, (_, i) => {
        const createdMs = (Math.floor(nowMs / DAY_MS) - (days - 1 - i)) * DAY_MS;
        return { name: stampedSnapshotName("daily", createdMs), createdMs };
      });
      out.push({
        dataset: disk,
        nodeId: vm.nodeId?.id ?? "",
        sizeBytes: (2 + (h % 15)) * GIB,
        snapshots,
      });
    }
  }
  return out;
}

/** A replication job (every 15 minutes, keep 3) for every ZFS disk to the next node, created once. */
async function seedReplicationJobs(
  jobs: ReplicationJobs,
  vms: readonly VmInfo[],
  nodes: readonly string[],
  nowMs: number,
): Promise<void> {
  if (nodes.length < 2) return;
  for (const vm of vms) {
    const source = vm.nodeId?.id ?? "";
    const target = nodes[(nodes.indexOf(source) + 1) % nodes.length] ?? "";
    for (const disk of vm.disks) {
      if (disk.backend !== StorageBackend.BACKEND_ZFS) continue;
      const jobId = `${disk.name.toLowerCase().replace(/[^a-z0-9._-]/g, "-")}-to-${target}`.slice(
        0,
        63,
      );
      const policy = "interval=15m keep=3";
      await jobs
        .create(
          create(ReplicationJobRecordSchema, {
            jobId,
            plan: {
              jobId,
              source: { nodeId: { id: source } },
              target: { nodeId: { id: target } },
              dataset: disk,
              policy,
            },
            intervalMs: 15n * 60_000n,
            keepSnapshots: 3,
            createdBy: "simulation",
            createdAtMs: BigInt(nowMs),
          }),
          nowMs,
        )
        .catch((err: unknown) => {
          // A job of another plan under this id (an earlier simulation) stays as it is.
          if (!(err instanceof RpcError && err.reason === "REPLICATION_JOB_EXISTS")) throw err;
        });
    }
  }
}
