import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type NodeInfo, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DefiningDriver } from "./hypervisor-driver.js";
import { createSimulatedNodeDriver } from "./simulated-node-driver.js";
import { generateWorld, loadWorld, type SimWorld, saveWorld } from "./simulated-world.js";

/** Options of {@link createLocalSimulation}. */
export interface LocalSimulationOptions {
  /** The node this hypervisor belongs to (its agent's identity). */
  readonly nodeId: string;
  /** Where the node keeps its domains (`sim-world.json`) and its action log (`sim-actions.log`). */
  readonly dir: string;
  /** Domains generated on first start, 0 to 50 (default 3). */
  readonly vms?: number;
  /** Seed of the generated domains (default 1). */
  readonly seed?: number;
  /** How long a start or stop takes before it takes effect (default 0). */
  readonly actionMs?: number;
  readonly now: number;
}

/** One node's simulated hypervisor, owned by that node's agent process. */
export interface LocalSimulation {
  readonly driver: DefiningDriver;
  /** What the node registers as. */
  readonly node: NodeInfo;
  /** What the hypervisor knows of a domain beyond its state (tenant, disks, HA), if defined here. */
  vmInfo(vmId: string): VmInfo | undefined;
}

/**
 * A simulated hypervisor for one node that owns its own domain list,
 * persisted in the node's directory: a killed agent process is a killed
 * node, and two nodes can each hold a copy of a VM. Every start and stop
 * call is appended to `sim-actions.log` (one line: epoch ms, action, vm),
 * so tests and operators can see what really ran, and how often; so is
 * every define and undefine.
 */
export function createLocalSimulation(options: LocalSimulationOptions): LocalSimulation {
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const file = join(options.dir, "sim-world.json");
  const actions = join(options.dir, "sim-actions.log");
  const world = loadWorld(file, options.now) ?? seed(options);
  saveWorld(world, file);
  const inner = createSimulatedNodeDriver(options.nodeId, {
    world,
    persist: () => saveWorld(world, file),
    migrationMs: 4000,
    migrationSteps: 10,
    failAt: () => undefined,
  });
  const actionMs = options.actionMs ?? 0;
  const note = (action: string, vmId: string) =>
    appendFileSync(actions, `${Date.now()} ${action} ${vmId}\n`, { mode: 0o600 });
  const driver: DefiningDriver = {
    kind: inner.kind,
    nodeId: inner.nodeId,
    capabilities: { liveMigration: false, offlineMigration: false },
    list: (signal) => inner.list(signal),
    info: (vmId, signal) => inner.info(vmId, signal),
    async start(vmId, signal) {
      if (actionMs > 0) await abortableSleep(actionMs, signal);
      await inner.start(vmId, signal);
      note("start", vmId);
    },
    async stop(vmId, stopOptions) {
      if (actionMs > 0) await abortableSleep(actionMs, stopOptions.signal);
      await inner.stop(vmId, stopOptions);
      note(stopOptions.force ? "force-stop" : "stop", vmId);
    },
    migrate: (vmId, to, migrateOptions) => inner.migrate(vmId, to, migrateOptions),
    async define(spec, signal) {
      if (actionMs > 0) await abortableSleep(actionMs, signal);
      await inner.define(spec, signal);
      note("define", spec.id);
    },
    async undefine(vmId, undefineOptions) {
      if (actionMs > 0) await abortableSleep(actionMs, undefineOptions.signal);
      await inner.undefine(vmId, undefineOptions);
      note(undefineOptions.force ? "force-undefine" : "undefine", vmId);
    },
  };
  const node = world.nodes.get(options.nodeId)?.info;
  if (node === undefined) throw new Error(`${file}: holds no node ${options.nodeId}`);
  return {
    driver,
    node,
    vmInfo: (vmId) => {
      const vm = world.vms.get(vmId);
      return vm?.node === options.nodeId ? vm.info : undefined;
    },
  };
}

/** A fresh world of this one node: generated domains named after the node. */
function seed(options: LocalSimulationOptions): SimWorld {
  const generated = generateWorld({
    nodes: 1,
    vmsPerNode: Math.max(0, Math.min(50, options.vms ?? 3)),
    seed: options.seed ?? 1,
    now: options.now,
  });
  const world: SimWorld = { nodes: new Map(), vms: new Map(), inflight: new Map(), violations: [] };
  for (const n of generated.nodes.values()) {
    const info = create(NodeInfoSchema, {
      ...n.info,
      id: create(NodeIdSchema, { id: options.nodeId }),
    });
    world.nodes.set(options.nodeId, { ...n, info });
  }
  for (const [id, vm] of generated.vms) {
    const vmId = `${options.nodeId}-${id}`.slice(0, 63);
    world.vms.set(vmId, {
      // Disks are named after the node's own VM id: two nodes never hold datasets of one name.
      info: create(VmInfoSchema, {
        ...vm.info,
        id: vmId,
        disks: vm.info.disks.map((d) => ({ ...d, name: `${vmId}-disk0`.slice(0, 63) })),
      }),
      node: options.nodeId,
      state: vm.state,
    });
  }
  return world;
}
