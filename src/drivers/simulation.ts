import { create } from "@bufbuild/protobuf";
import type { Clock } from "../core/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import { type Health, HealthSchema, type NodeInfo } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { vmStateOf } from "./domain-state.js";
import type { DomainState, JobAbortingDriver, RecoveringDriver } from "./hypervisor-driver.js";
import { createSimulatedNodeDriver } from "./simulated-node-driver.js";
import { simulatedUsage, type UsingDomain } from "./simulated-usage.js";
import { generateWorld, loadWorld, type SimWorld, saveWorld } from "./simulated-world.js";

/** Options of {@link createSimulation}. */
export interface SimulationOptions {
  /** Number of nodes, 1 to 2000 (default 3). */
  readonly nodes?: number;
  /** VMs per node, 0 to 50 (default 3). */
  readonly vmsPerNode?: number;
  /** Seed of the generator: the same seed gives the same cluster (default 1). */
  readonly seed?: number;
  readonly clock: Clock;
  /**
   * Keep the simulated world in this file, so it outlives the process the
   * way real hypervisors outlive the control plane. Unset: in memory only.
   */
  readonly stateFile?: string;
  /** How long a simulated migration takes (default 4000 ms). */
  readonly migrationMs?: number;
  /** Progress reports per migration (default 10). */
  readonly migrationSteps?: number;
  /**
   * A node that has not heard from the control plane for this long stops
   * its VMs itself (its watchdog fences it). Default 30 000 ms.
   */
  readonly fenceDelayMs?: number;
}

/** Faults a test or an operator can inject into the simulation. */
export interface SimulationFaults {
  /** The next migration of `vmId` fails when it reaches `percent`. */
  failMigration(vmId: string, percent: number): void;
  /** The next migration of `vmId` stops progressing at `percent` until its job is aborted. */
  holdMigration(vmId: string, percent: number): void;
  /** The node loses power: heartbeats stop, its VMs stop at once. */
  killNode(nodeId: string): void;
  /** The node's heartbeats stop reaching the control plane; it keeps running its VMs until it fences itself. */
  partitionNode(nodeId: string): void;
  /** Heartbeats of a partitioned node get through again. */
  healNode(nodeId: string): void;
}

/** An in-process simulated cluster: nodes with hypervisors and VMs (storage: simulated-storage.ts). */
export interface Simulation {
  /** What each simulated node registers with. */
  readonly nodes: readonly NodeInfo[];
  /** The hypervisor of one node. */
  driver(nodeId: string): (RecoveringDriver & JobAbortingDriver) | undefined;
  /** A heartbeat of the node now, or undefined when none would reach the control plane. */
  heartbeat(nodeId: string): Health | undefined;
  /** Tells the node its last heartbeat was received (it then stays unfenced). */
  delivered(nodeId: string): void;
  readonly faults: SimulationFaults;
  /** Where a VM is defined and its state, or undefined. */
  locate(vmId: string): { nodeId: string; state: DomainState } | undefined;
  /** Every time a VM was started while still running elsewhere (should stay empty). */
  violations(): readonly string[];
  /** Stops the fencing timer. */
  close(): void;
}

/** Creates a deterministic simulated cluster, reloading its world from `stateFile` when one exists. */
export function createSimulation(options: SimulationOptions): Simulation {
  const nodeCount = clampInt(options.nodes ?? 3, 1, 2000, "nodes");
  const vmsPerNode = clampInt(options.vmsPerNode ?? 3, 0, 50, "vmsPerNode");
  const seed = options.seed ?? 1;
  const { clock, stateFile } = options;
  const fenceDelayMs = options.fenceDelayMs ?? 30_000;
  const born = clock.now();
  const world: SimWorld =
    (stateFile === undefined ? undefined : loadWorld(stateFile, born)) ??
    generateWorld({ nodes: nodeCount, vmsPerNode, seed, now: born });
  const persist = () => {
    if (stateFile !== undefined) saveWorld(world, stateFile);
  };
  persist();
  const failures = new Map<string, number>();
  const holds = new Map<string, number>();
  const ctx = {
    jobs: new Map<string, AbortController>(),
    holdAt(vmId: string) {
      const at = holds.get(vmId);
      holds.delete(vmId);
      return at;
    },
    world,
    persist,
    migrationMs: options.migrationMs ?? 4000,
    migrationSteps: options.migrationSteps ?? 10,
    failAt(vmId: string) {
      const at = failures.get(vmId);
      failures.delete(vmId);
      return at;
    },
  };
  const drivers = new Map<string, RecoveringDriver & JobAbortingDriver>();
  for (const id of world.nodes.keys()) drivers.set(id, createSimulatedNodeDriver(id, ctx));

  const stopVmsOf = (nodeId: string) => {
    for (const vm of world.vms.values())
      if (vm.node === nodeId && vm.state === "running") vm.state = "stopped";
  };
  const fence = () => {
    const now = clock.now();
    let changed = false;
    for (const [id, n] of world.nodes) {
      if (n.alive && n.partitioned && !n.fenced && now - n.lastContactMs > fenceDelayMs) {
        n.fenced = true;
        stopVmsOf(id);
        changed = true;
      }
    }
    if (changed) persist();
  };
  const fenceTimer = setInterval(fence, Math.max(10, Math.min(250, fenceDelayMs / 10)));
  fenceTimer.unref();

  const node = (nodeId: string) => {
    const n = world.nodes.get(nodeId);
    if (n === undefined) throw new TypeError(`no simulated node ${nodeId}`);
    return n;
  };

  return {
    nodes: [...world.nodes.values()].map((n) => n.info),
    driver: (nodeId) => drivers.get(nodeId),
    heartbeat(nodeId) {
      fence();
      const n = world.nodes.get(nodeId);
      if (n === undefined || !n.alive || n.partitioned) return undefined;
      const now = clock.now();
      const vms: VmInfo[] = [];
      const domains: UsingDomain[] = [];
      for (const vm of world.vms.values()) {
        if (vm.node !== nodeId) continue;
        domains.push({ state: vm.state, vcpus: vm.info.vcpus, memoryBytes: vm.info.memoryBytes });
        vms.push({
          ...vm.info,
          nodeId: { $typeName: "debvisor.v1.NodeId", id: nodeId },
          state: world.inflight.has(vm.info.id) ? VmState.MIGRATING : vmStateOf(vm.state),
        });
      }
      return create(HealthSchema, {
        nodeId: { id: nodeId },
        overall: StatusCode.STATUS_OK,
        cephStatus: "HEALTH_OK",
        ...simulatedUsage(domains, n.info.capacity),
        diskUsedPct: 35,
        netRttMs: 0.3,
        timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1_000_000 },
        vms,
      });
    },
    delivered(nodeId) {
      const n = world.nodes.get(nodeId);
      if (n === undefined) return;
      n.lastContactMs = clock.now();
      if (n.fenced) {
        // Back in contact: the node rejoins with its VMs stopped.
        n.fenced = false;
        persist();
      }
    },
    faults: {
      failMigration(vmId, percent) {
        failures.set(vmId, percent);
      },
      holdMigration(vmId, percent) {
        holds.set(vmId, percent);
      },
      killNode(nodeId) {
        const n = node(nodeId);
        n.alive = false;
        stopVmsOf(nodeId);
        persist();
      },
      partitionNode(nodeId) {
        node(nodeId).partitioned = true;
      },
      healNode(nodeId) {
        const n = node(nodeId);
        n.partitioned = false;
        n.alive = true;
        persist();
      },
    },
    locate(vmId) {
      const vm = world.vms.get(vmId);
      return vm === undefined ? undefined : { nodeId: vm.node, state: vm.state };
    },
    violations: () => world.violations,
    close() {
      clearInterval(fenceTimer);
    },
  };
}

function clampInt(value: number, min: number, max: number, name: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`simulation ${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}
