import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type NodeInfo, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DefiningDriver, DomainStatus, RecoveringDriver } from "./hypervisor-driver.js";
import { createSimFencing } from "./local-simulation-fencing.js";
import { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";
import { createSimulatedNodeDriver } from "./simulated-node-driver.js";
import { openSimulatedWatchdog } from "./simulated-watchdog.js";
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
  /**
   * The cluster's shared simulated storage (a directory every node's agent
   * on this host uses): VM definitions and per-disk locks with fencing
   * tokens. Absent: starts are not fenced and VMs cannot be recovered here.
   */
  readonly sharedDir?: string;
  /**
   * Only look: write nothing (`debvisor-agent status` beside a running
   * agent); domains a watchdog reset or a storage fence stopped show stopped.
   */
  readonly readOnly?: boolean;
}

/** One node's simulated hypervisor, owned by that node's agent process. */
export interface LocalSimulation {
  /** Also a RecoveringDriver (from the shared storage) when `sharedDir` is set. */
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
 *
 * With `sharedDir`, a start or recover takes the VM's disk locks under the
 * operation's generation in the same transaction that records the domain
 * as running (see SimulatedDiskLocks), and a domain whose locks another
 * node took is stopped at the node's next hypervisor call (the agent makes
 * one at least every second, on its fencing tick). The watchdog
 * (`watchdog.json`, petted by the agent) resets the node when it expires.
 */
export function createLocalSimulation(options: LocalSimulationOptions): LocalSimulation {
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const file = join(options.dir, "sim-world.json");
  const actions = join(options.dir, "sim-actions.log");
  const loaded = loadWorld(file, options.now);
  const world = loaded ?? seed(options);
  const readOnly = options.readOnly === true;
  const persist = () => {
    if (!readOnly) saveWorld(world, file);
  };
  persist();
  const inner = createSimulatedNodeDriver(options.nodeId, {
    world,
    persist,
    migrationMs: 4000,
    migrationSteps: 10,
    failAt: () => undefined,
  });
  const actionMs = options.actionMs ?? 0;
  const note = (action: string, vmId: string) =>
    appendFileSync(actions, `${Date.now()} ${action} ${vmId}\n`, { mode: 0o600 });
  const locks =
    options.sharedDir === undefined ? undefined : openSimulatedDiskLocks(options.sharedDir);
  if (locks !== undefined && !readOnly)
    for (const vm of world.vms.values())
      if (vm.node === options.nodeId) locks.define(vm.info, options.nodeId);
  const fencing = createSimFencing({
    nodeId: options.nodeId,
    world,
    locks,
    watchdog: openSimulatedWatchdog(join(options.dir, "watchdog.json")),
    readOnly,
    persist,
    note,
  });
  const seen = (d: DomainStatus, down: Set<string>): DomainStatus =>
    down.has(d.id) ? { ...d, state: "stopped" } : d;
  /** Records `vmId` running here, with its disk locks taken under `generation` in the same step. */
  const startHere = (vmId: string, generation: bigint, define?: () => void) => {
    const vm = world.vms.get(vmId);
    const info = vm?.info ?? locks?.definition(vmId);
    if (info === undefined) throw new RpcError("VM_NOT_FOUND");
    const record = () => {
      define?.();
      const here = world.vms.get(vmId);
      if (here === undefined || here.node !== options.nodeId) throw new RpcError("VM_NOT_FOUND");
      here.state = "running";
      persist();
    };
    if (locks === undefined) record();
    else locks.acquire(lockNamesOf(info), options.nodeId, generation, record);
  };
  const base: DefiningDriver = {
    kind: inner.kind,
    nodeId: inner.nodeId,
    capabilities: { liveMigration: false, offlineMigration: false },
    async list(signal) {
      const down = fencing.check();
      return (await inner.list(signal)).map((d) => seen(d, down));
    },
    async info(vmId, signal) {
      const down = fencing.check();
      const d = await inner.info(vmId, signal);
      return d === undefined ? undefined : seen(d, down);
    },
    async start(vmId, signal, startOptions) {
      fencing.check();
      if (actionMs > 0) await abortableSleep(actionMs, signal);
      // The token is checked when the domain starts, not when the call arrived.
      fencing.check();
      const d = await inner.info(vmId, signal);
      if (d === undefined) throw new RpcError("VM_NOT_FOUND");
      if (d.state === "running") return;
      startHere(vmId, startOptions?.generation ?? 0n);
      note("start", vmId);
    },
    async stop(vmId, stopOptions) {
      fencing.check();
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
  /** Defines a VM of another node here from the shared storage's definition, and starts it. */
  const recover: RecoveringDriver["recover"] = async (vmId, fromNodeId, signal, recoverOptions) => {
    if (locks === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
    fencing.check();
    if (actionMs > 0) await abortableSleep(actionMs, signal);
    fencing.check();
    const definition = locks.definition(vmId);
    if (definition === undefined) throw new RpcError("VM_NOT_FOUND");
    startHere(vmId, recoverOptions?.generation ?? 0n, () => {
      const here = world.vms.get(vmId);
      if (here?.node === options.nodeId) return;
      world.vms.set(vmId, { info: definition, node: options.nodeId, state: "stopped" });
    });
    note(`recover-from-${fromNodeId}`, vmId);
  };
  const recovering: DefiningDriver & RecoveringDriver = { ...base, recover };
  const driver: DefiningDriver = locks === undefined ? base : recovering;
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
    // Disks are named after the VM, so nodes sharing one storage never share a disk.
    const disks = vm.info.disks.map((d) =>
      create(DatasetRefSchema, { ...d, name: `${vmId}-${d.name.slice(id.length + 1)}` }),
    );
    world.vms.set(vmId, {
      info: create(VmInfoSchema, { ...vm.info, id: vmId, disks }),
      node: options.nodeId,
      state: vm.state,
    });
  }
  return world;
}
