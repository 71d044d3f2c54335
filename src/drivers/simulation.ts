import { create } from "@bufbuild/protobuf";
import type { Clock } from "../core/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type Health,
  HealthSchema,
  type NodeInfo,
  NodeInfoSchema,
} from "../gen/debvisor/v1/node_pb.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { datasetKey, type StorageDriver } from "./storage-driver.js";

const GIB = 1024n ** 3n;
const DAY_MS = 86_400_000;

/** Options of {@link createSimulation}. */
export interface SimulationOptions {
  /** Number of nodes, 1 to 500 (default 3). */
  readonly nodes?: number;
  /** VMs per node, 0 to 50 (default 3). */
  readonly vmsPerNode?: number;
  /** Seed of the generator: the same seed gives the same cluster (default 1). */
  readonly seed?: number;
  readonly clock: Clock;
}

/** An in-process simulated cluster: nodes that report health, VMs, datasets and snapshots. */
export interface Simulation extends StorageDriver {
  /** What each simulated node registers with. */
  readonly nodes: readonly NodeInfo[];
  /** A heartbeat of the node now, carrying the VMs it runs. */
  heartbeat(nodeId: string): Health;
}

/**
 * Creates a deterministic simulated cluster. Addresses are in TEST-NET-1
 * (192.0.2.0/24): documentation addresses nothing ever connects to.
 */
export function createSimulation(options: SimulationOptions): Simulation {
  const nodeCount = clampInt(options.nodes ?? 3, 1, 500, "nodes");
  const vmsPerNode = clampInt(options.vmsPerNode ?? 3, 0, 50, "vmsPerNode");
  const rand = mulberry32(options.seed ?? 1);
  const { clock } = options;
  const nodes: NodeInfo[] = [];
  const vmsByNode = new Map<string, VmInfo[]>();
  const snapshots = new Map<string, SnapshotInfo[]>();
  const born = clock.now();
  const tenants = ["acme", "globex", "initech"];
  const roles = ["web", "db", "cache", "ci", "mail"];

  for (let n = 1; n <= nodeCount; n++) {
    const id = `node-${String(n).padStart(2, "0")}`;
    nodes.push(
      create(NodeInfoSchema, {
        id: { id },
        hostname: `hv${String(n).padStart(2, "0")}.sim.debvisor.internal`,
        ip: `192.0.2.${(n % 254) + 1}`,
        rack: `r${Math.ceil(n / 4)}`,
        zone: n % 2 === 1 ? "zone-a" : "zone-b",
        version: "sim-1",
        capacity: { cpuCores: 32, memoryBytes: 128n * GIB, storageBytes: 4096n * GIB },
        labels: { "debvisor.io/simulated": "true", ...(n % 3 === 0 ? { gpu: "none" } : {}) },
      }),
    );
    const vms: VmInfo[] = [];
    for (let v = 1; v <= vmsPerNode; v++) {
      const vmId = `vm-${String((n - 1) * vmsPerNode + v).padStart(3, "0")}`;
      const backend = rand() < 0.5 ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD;
      const disk = create(DatasetRefSchema, {
        backend,
        pool: backend === StorageBackend.BACKEND_ZFS ? "tank" : "rbd",
        name: `${vmId}-disk0`,
      });
      vms.push(
        create(VmInfoSchema, {
          id: vmId,
          name: `${roles[Math.floor(rand() * roles.length)]}-${vmId.slice(3)}`,
          tenant: tenants[Math.floor(rand() * tenants.length)],
          state: VmState.RUNNING,
          vcpus: 1 + Math.floor(rand() * 8),
          memoryBytes: BigInt(1 + Math.floor(rand() * 16)) * GIB,
          disks: [disk],
          ha: rand() < 0.5,
          liveMigratable: rand() < 0.8,
          cpuModel: "host-model",
          nodeId: { id },
        }),
      );
      snapshots.set(datasetKey(disk), dailySnapshots(disk, born, 3 + Math.floor(rand() * 5)));
    }
    vmsByNode.set(id, vms);
  }

  return {
    nodes,
    heartbeat(nodeId) {
      const now = clock.now();
      const phase = (now / 60_000 + nodeId.length) % (2 * Math.PI);
      return create(HealthSchema, {
        nodeId: { id: nodeId },
        overall: StatusCode.STATUS_OK,
        cephStatus: "HEALTH_OK",
        cpuLoad: round2(1 + Math.sin(phase) * 0.5 + rand() * 0.2),
        memUsedPct: round2(40 + rand() * 20),
        diskUsedPct: round2(30 + rand() * 10),
        netRttMs: round2(0.2 + rand() * 0.3),
        timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1_000_000 },
        vms: vmsByNode.get(nodeId) ?? [],
      });
    },
    async listSnapshots(dataset) {
      const list = snapshots.get(datasetKey(dataset));
      return list === undefined ? undefined : [...list];
    },
  };
}

function dailySnapshots(dataset: DatasetRef, now: number, count: number): SnapshotInfo[] {
  const out: SnapshotInfo[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const t = Math.floor((now - i * DAY_MS) / DAY_MS) * DAY_MS;
    const stamp = new Date(t).toISOString().replace(/[-:]/g, "").slice(0, 15);
    out.push(
      create(SnapshotInfoSchema, {
        ref: { dataset, snapshotName: `daily-${stamp}Z` },
        created: { seconds: BigInt(t / 1000), nanos: 0 },
        sizeBytes: BigInt(1 + i) * 64n * 1024n * 1024n,
        held: false,
        labels: { label: "daily" },
      }),
    );
  }
  return out;
}

function clampInt(value: number, min: number, max: number, name: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`simulation ${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** A small seeded PRNG so the simulation is reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
