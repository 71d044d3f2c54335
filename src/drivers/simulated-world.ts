import { readFileSync } from "node:fs";
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type NodeInfo, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { writeFileDurably } from "./durable-file.js";
import type { DomainState } from "./hypervisor-driver.js";

const GIB = 1024n ** 3n;

/** A VM of the simulated world: its definition, where it is defined and whether it runs. */
export interface SimVm {
  /** Static description (its node_id and state fields are not used; see node and state). */
  readonly info: VmInfo;
  node: string;
  state: DomainState;
}

/** A simulated node's condition. */
export interface SimNode {
  readonly info: NodeInfo;
  /** False after killNode: the machine is down and its VMs with it. */
  alive: boolean;
  /** True while its heartbeats do not reach the control plane. */
  partitioned: boolean;
  /** When the control plane last heard the node (its own view, for fencing). */
  lastContactMs: number;
  /** True once the node stopped its VMs because it lost contact. */
  fenced: boolean;
}

/** The whole simulated cluster, the one truth the simulated drivers share. */
export interface SimWorld {
  readonly nodes: Map<string, SimNode>;
  readonly vms: Map<string, SimVm>;
  /** VMs being migrated, by id, to the node they are going to. */
  readonly inflight: Map<string, string>;
  /** Every time a VM was started while it was still running elsewhere. */
  readonly violations: string[];
}

/** Options that shape a generated world. */
export interface WorldShape {
  readonly nodes: number;
  readonly vmsPerNode: number;
  readonly seed: number;
  readonly now: number;
}

const TENANTS = ["acme", "globex", "initech"];
const ROLES = ["web", "db", "cache", "ci", "mail"];
/** Host CPU models: most nodes alike, every fifth node of an older generation. */
const HOST_MODELS = ["EPYC-Milan", "EPYC-Rome"];
const GUEST_MODELS = ["EPYC", "EPYC-Rome", "Skylake-Server"];

/**
 * Generates a deterministic world: the same shape gives the same cluster.
 * Addresses are in TEST-NET-1 (192.0.2.0/24), which nothing connects to.
 */
export function generateWorld(shape: WorldShape): SimWorld {
  const rand = mulberry32(shape.seed);
  const world: SimWorld = { nodes: new Map(), vms: new Map(), inflight: new Map(), violations: [] };
  const width = Math.max(2, String(shape.nodes).length);
  const vmWidth = Math.max(3, String(shape.nodes * shape.vmsPerNode).length);
  for (let n = 1; n <= shape.nodes; n++) {
    const id = `node-${String(n).padStart(width, "0")}`;
    const host = n % 5 === 0 ? HOST_MODELS[1] : HOST_MODELS[0];
    const info = create(NodeInfoSchema, {
      id: { id },
      hostname: `hv${String(n).padStart(width, "0")}.sim.debvisor.internal`,
      ip: `192.0.2.${(n % 254) + 1}`,
      rack: `r${Math.ceil(n / 4)}`,
      zone: n % 2 === 1 ? "zone-a" : "zone-b",
      version: "sim-1",
      capacity: { cpuCores: 32, memoryBytes: 256n * GIB, storageBytes: 4096n * GIB },
      labels: { "debvisor.io/simulated": "true" },
      cpuModel: host,
      cpuModels: host === "EPYC-Milan" ? GUEST_MODELS : ["EPYC", "EPYC-Rome"],
      sharedPools: ["rbd"],
    });
    world.nodes.set(id, {
      info,
      alive: true,
      partitioned: false,
      lastContactMs: shape.now,
      fenced: false,
    });
    for (let v = 1; v <= shape.vmsPerNode; v++) {
      const vmId = `vm-${String((n - 1) * shape.vmsPerNode + v).padStart(vmWidth, "0")}`;
      // Shapes follow the VM's position on its node, so every node of four or
      // more VMs has each kind: ZFS disks, no live migration, CPU models.
      const zfs = v % 3 === 2;
      const cpu = v % 7 === 3 ? "host-passthrough" : v % 7 === 5 ? "Skylake-Server" : "host-model";
      world.vms.set(vmId, {
        info: create(VmInfoSchema, {
          id: vmId,
          name: `${ROLES[Math.floor(rand() * ROLES.length)]}-${vmId.slice(3)}`,
          tenant: TENANTS[Math.floor(rand() * TENANTS.length)],
          vcpus: 1 + Math.floor(rand() * 4),
          memoryBytes: BigInt(1 + Math.floor(rand() * 8)) * GIB,
          disks: [
            create(DatasetRefSchema, {
              backend: zfs ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD,
              pool: zfs ? "tank" : "rbd",
              name: `${vmId}-disk0`,
            }),
          ],
          ha: v % 2 === 1,
          liveMigratable: v % 4 !== 0,
          cpuModel: cpu,
        }),
        node: id,
        state: "running",
      });
    }
  }
  return world;
}

interface WorldFile {
  version: 1;
  vms: { info: JsonValue; node: string; state: DomainState }[];
  nodes: { info: JsonValue; alive: boolean; fenced: boolean }[];
  /** Migrations under way when the file was written. */
  inflight: [string, string][];
  violations: string[];
}

/** Writes the world durably: a temporary file, fsync, rename. */
export function saveWorld(world: SimWorld, file: string): void {
  const data: WorldFile = {
    version: 1,
    vms: [...world.vms.values()].map((v) => ({
      info: toJson(VmInfoSchema, v.info),
      node: v.node,
      state: v.state,
    })),
    nodes: [...world.nodes.values()].map((n) => ({
      info: toJson(NodeInfoSchema, n.info),
      alive: n.alive,
      fenced: n.fenced,
    })),
    inflight: [...world.inflight],
    violations: world.violations,
  };
  writeFileDurably(file, JSON.stringify(data));
}

/**
 * Reads a world written by {@link saveWorld}, or undefined when there is no
 * file. Migrations that were under way when the process died are aborted,
 * as a hypervisor aborts a job whose controller vanished: each VM stays on
 * the node the file says it is on.
 */
export function loadWorld(file: string, now: number): SimWorld | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const data = JSON.parse(text) as WorldFile;
  if (data.version !== 1) throw new Error(`simulation state ${file}: unknown version`);
  const world: SimWorld = {
    nodes: new Map(),
    vms: new Map(),
    inflight: new Map(),
    violations: [...data.violations],
  };
  for (const n of data.nodes) {
    const info = fromJson(NodeInfoSchema, n.info);
    world.nodes.set(info.id?.id ?? "", {
      info,
      alive: n.alive,
      partitioned: false,
      lastContactMs: now,
      fenced: n.fenced,
    });
  }
  for (const v of data.vms) {
    const info = fromJson(VmInfoSchema, v.info);
    world.vms.set(info.id, { info, node: v.node, state: v.state });
  }
  return world;
}

/** A small seeded PRNG so the simulation is reproducible. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
