import { createHash } from "node:crypto";
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { nodeKey, RpcError, throwIfAborted } from "../core/index.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type NodeInfo, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import type {
  DefiningDriver,
  DiskHoldingDriver,
  DomainStatus,
  MigrateOptions,
  RecoveringDriver,
} from "./hypervisor-driver.js";
import { createSimFencing } from "./local-simulation-fencing.js";
import { readHandoffs, sendHandoff, simMigrationUri, simNodeDir } from "./sim-handoff.js";
import { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";
import {
  checkMigratingState,
  createSimulatedNodeDriver,
  simulatedTransfer,
} from "./simulated-node-driver.js";
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
  /** How long a migration takes (default 4000 ms). */
  readonly migrationMs?: number;
  /** Percent at which migrations from here fail (a fault injected at run time), asked at each step. */
  readonly failMigrationAt?: () => number | undefined;
  /**
   * Percent at which migrations from here stop progressing (a fault injected
   * at run time), asked at each step: held until the fault is lifted or the
   * migration is cancelled.
   */
  readonly holdMigrationAt?: () => number | undefined;
  /**
   * Only look: write nothing, adopt nothing (`debvisor-agent status` beside
   * a running agent); domains a watchdog reset or a storage fence stopped
   * show stopped.
   */
  readonly readOnly?: boolean;
  readonly now: number;
  /**
   * The cluster's shared simulated storage (a directory every node's agent
   * on this host uses): VM definitions and per-disk locks with fencing
   * tokens. Absent: starts are not fenced and VMs cannot be recovered here.
   */
  readonly sharedDir?: string;
}

/** One node's simulated hypervisor, owned by that node's agent process. */
export interface LocalSimulation {
  /** Also a RecoveringDriver (from the shared storage) when `sharedDir` is set. */
  readonly driver: DefiningDriver;
  /** What the node registers as. */
  readonly node: NodeInfo;
  /** How other simulated nodes reach this one for a migration (`sim://<dir>`). */
  readonly migrationUri: string;
  /** What the hypervisor knows of a domain beyond its state (tenant, disks, HA), if defined here. */
  vmInfo(vmId: string): VmInfo | undefined;
  /**
   * Defines a domain here, stopped, from the control plane's description
   * (failover of a failed node's VM); a domain already defined is kept.
   */
  define(info: VmInfo): void;
  /** Stops adopting handed-over domains in the background. */
  close(): void;
}

/** Interval of the background look into the inbox for handed-over domains. */
const ADOPT_EVERY_MS = 200;
/** How long a handed-over running domain waits for its disks' locks to move here. */
const HANDOFF_LOCK_WAIT_MS = 2000;

/**
 * A simulated hypervisor for one node that owns its own domain list,
 * persisted in the node's directory: a killed agent process is a killed
 * node, and two nodes can each hold a copy of a VM. Every start, stop,
 * migration, define and undefine is appended to `sim-actions.log` (one
 * line: epoch ms, action, vm), so tests and operators can see what really
 * ran, and how often. A migration runs here, on the source, like libvirt's
 * peer-to-peer migration: progress, a fault at a percent, then the domain
 * is handed to the destination's directory (see sim-handoff.ts), so it
 * completes even if the control plane that asked for it is gone.
 *
 * With `sharedDir`, a start or recover takes the VM's disk locks under the
 * operation's generation in the same transaction that records the domain
 * as running (see SimulatedDiskLocks); a migration hands its locks to the
 * destination in the step that hands the domain over; a domain whose locks
 * another node took is stopped at the node's next hypervisor call (the
 * agent makes one at least every second, on its fencing tick). The watchdog
 * (`watchdog.json`, petted by the agent) resets the node when it expires.
 */
export function createLocalSimulation(options: LocalSimulationOptions): LocalSimulation {
  const { nodeId, dir } = options;
  const readOnly = options.readOnly ?? false;
  if (!readOnly) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, "sim-world.json");
  const actions = join(dir, "sim-actions.log");
  const world = loadWorld(file, options.now) ?? seed(options);
  const persist = () => {
    if (!readOnly) saveWorld(world, file);
  };
  persist();
  const inner = createSimulatedNodeDriver(nodeId, {
    world,
    persist,
    migrationMs: options.migrationMs ?? 4000,
    migrationSteps: 10,
    failAt: () => undefined,
    holdAt: () => undefined,
    jobs: new Map(),
  });
  const actionMs = options.actionMs ?? 0;
  const note = (action: string, vmId: string) => {
    if (!readOnly) appendFileSync(actions, `${Date.now()} ${action} ${vmId}\n`, { mode: 0o600 });
  };
  const locks =
    options.sharedDir === undefined ? undefined : openSimulatedDiskLocks(options.sharedDir);
  if (locks !== undefined && !readOnly)
    for (const vm of world.vms.values()) if (vm.node === nodeId) locks.define(vm.info, nodeId);
  const fencing = createSimFencing({
    nodeId,
    world,
    locks,
    watchdog: openSimulatedWatchdog(join(dir, "watchdog.json")),
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
      if (here === undefined || here.node !== nodeId) throw new RpcError("VM_NOT_FOUND");
      here.state = "running";
      persist();
    };
    if (locks === undefined) record();
    else locks.acquire(lockNamesOf(info), nodeId, generation, record);
  };

  /** Takes in domains other nodes handed over (read-only: shows them, as they are about to be). */
  const adopt = () => {
    let changed = false;
    readHandoffs(
      dir,
      (h, ageMs) => {
        // The source moves the disks' locks and writes the handoff in one step,
        // but the file shows a moment before the locks' move commits: adopted
        // then, a running domain would be fenced (its locks still the source's).
        // It waits for the move, for a while.
        if (
          locks !== undefined &&
          h.state === "running" &&
          ageMs < HANDOFF_LOCK_WAIT_MS &&
          locks.lost(lockNamesOf(h.info), nodeId).length > 0
        )
          return false;
        world.vms.set(h.info.id, { info: h.info, node: nodeId, state: h.state });
        changed = true;
        if (!readOnly) note(`adopt-from-${h.from}`, h.info.id);
        return true;
      },
      !readOnly,
    );
    if (changed) persist();
  };
  adopt();
  const timer = readOnly ? undefined : setInterval(adopt, ADOPT_EVERY_MS);
  timer?.unref();

  async function migrate(
    vmId: string,
    to: { nodeId: string; uri: string },
    m: MigrateOptions,
  ): Promise<void> {
    const uri = to.uri;
    const { signal, live, onProgress } = m;
    throwIfAborted(signal);
    const before = await inner.info(vmId, signal);
    const vm = world.vms.get(vmId);
    if (before === undefined || vm === undefined) throw new RpcError("VM_NOT_FOUND");
    const destDir = simNodeDir(uri);
    if (destDir === dir)
      throw new RpcError("MIGRATION_NOT_ALLOWED", { message: "destination is the source node" });
    // Like libvirt: live needs a running domain, offline a stopped one.
    if (live !== (vm.state === "running"))
      throw new RpcError("MIGRATION_NOT_ALLOWED", {
        message: live
          ? "live migration needs the vm running"
          : "offline migration needs the vm stopped",
      });
    const total = live ? vm.info.memoryBytes + vm.info.memoryBytes / 4n : vm.info.memoryBytes / 8n;
    const steps = 10;
    const stepMs = (options.migrationMs ?? 4000) / (steps + 1);
    onProgress?.({ phase: "preparing", percent: 0, bytesTransferred: 0n, bytesTotal: total });
    for (let i = 1; i <= steps; i++) {
      await abortableSleep(stepMs, signal);
      const percent = Math.min(99, Math.round((i / steps) * 100));
      const failAt = options.failMigrationAt?.();
      if (failAt !== undefined && percent >= failAt)
        throw new RpcError("BACKEND_FAILED", {
          message: `migration failed at ${percent} % (injected fault)`,
        });
      if (world.vms.get(vmId)?.node !== nodeId) throw new RpcError("VM_NOT_FOUND");
      fencing.check();
      checkMigratingState(vm.state, live);
      onProgress?.(simulatedTransfer(total, percent, live));
      for (;;) {
        const holdAt = options.holdMigrationAt?.();
        if (holdAt === undefined || percent < holdAt) break;
        await abortableSleep(100, signal);
      }
    }
    await abortableSleep(stepMs, signal);
    // What the watchdog or the storage did meanwhile applies before the switchover.
    fencing.check();
    checkMigratingState(vm.state, live);
    onProgress?.({ phase: "switchover", percent: 99, bytesTransferred: total, bytesTotal: total });
    // Past this point the domain is the destination's: no abort applies.
    // The disks' locks move with the domain, in the same step (generation kept).
    const handOver = () => {
      sendHandoff(destDir, { info: vm.info, state: vm.state, from: nodeId });
      world.vms.delete(vmId);
      persist();
    };
    if (locks === undefined) handOver();
    else locks.handOver(lockNamesOf(vm.info), nodeId, to.nodeId, 0n, handOver);
    note("migrate-out", vmId);
    onProgress?.({ phase: "completed", percent: 100, bytesTransferred: total, bytesTotal: total });
  }

  const withAdopt =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    (...a: A): Promise<R> => {
      adopt();
      return f(...a);
    };
  const base: DefiningDriver = {
    kind: inner.kind,
    nodeId,
    capabilities: { liveMigration: true, offlineMigration: true },
    list: withAdopt(async (signal: AbortSignal) => {
      const down = fencing.check();
      return (await inner.list(signal)).map((d) => seen(d, down));
    }),
    info: withAdopt(
      async (vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined> => {
        const down = fencing.check();
        const d = await inner.info(vmId, signal);
        return d === undefined ? undefined : seen(d, down);
      },
    ),
    start: withAdopt(
      async (vmId: string, signal: AbortSignal, startOptions?: { generation?: bigint }) => {
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
    ),
    stop: withAdopt(async (vmId: string, stopOptions: { force: boolean; signal: AbortSignal }) => {
      fencing.check();
      if (actionMs > 0) await abortableSleep(actionMs, stopOptions.signal);
      await inner.stop(vmId, stopOptions);
      note(stopOptions.force ? "force-stop" : "stop", vmId);
    }),
    migrate: withAdopt((vmId: string, to: { nodeId: string; uri: string }, m: MigrateOptions) =>
      migrate(vmId, to, m),
    ),
    define: withAdopt(
      async (spec: Parameters<DefiningDriver["define"]>[0], signal: AbortSignal) => {
        if (actionMs > 0) await abortableSleep(actionMs, signal);
        await inner.define(spec, signal);
        const defined = world.vms.get(spec.id);
        if (defined !== undefined) locks?.define(defined.info, nodeId);
        note("define", spec.id);
      },
    ),
    undefine: withAdopt(
      async (vmId: string, undefineOptions: Parameters<DefiningDriver["undefine"]>[1]) => {
        if (actionMs > 0) await abortableSleep(actionMs, undefineOptions.signal);
        const info = world.vms.get(vmId)?.info;
        await inner.undefine(vmId, undefineOptions);
        // Its copy gone, the node writes nothing: its locks of the disks are free.
        if (info !== undefined)
          locks?.release(lockNamesOf(info), nodeId, undefineOptions.generation ?? 0n);
        note(undefineOptions.force ? "force-undefine" : "undefine", vmId);
      },
    ),
  };
  /** Defines a VM of another node here from the shared storage's definition, and starts it. */
  const recover: RecoveringDriver["recover"] = async (vmId, fromNodeId, signal, recoverOptions) => {
    if (locks === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
    adopt();
    fencing.check();
    if (actionMs > 0) await abortableSleep(actionMs, signal);
    fencing.check();
    const definition = locks.definition(vmId);
    if (definition === undefined) throw new RpcError("VM_NOT_FOUND");
    startHere(vmId, recoverOptions?.generation ?? 0n, () => {
      const here = world.vms.get(vmId);
      if (here?.node === nodeId) return;
      world.vms.set(vmId, { info: definition, node: nodeId, state: "stopped" });
    });
    note(`recover-from-${fromNodeId}`, vmId);
  };
  /** Whether this node holds every lock of its copy's disks (none held elsewhere, none free), and under which generation. */
  const heldDisks: DiskHoldingDriver["heldDisks"] = async (vmId) => {
    const vm = world.vms.get(vmId);
    if (locks === undefined || vm === undefined || vm.node !== nodeId) return undefined;
    let generation = 0n;
    for (const disk of lockNamesOf(vm.info)) {
      const lock = locks.lock(disk);
      if (lock?.owner !== nodeId) return undefined;
      if (lock.generation > generation) generation = lock.generation;
    }
    return { generation };
  };
  const recovering: DefiningDriver & RecoveringDriver & DiskHoldingDriver = {
    ...base,
    recover,
    heldDisks,
  };
  const driver: DefiningDriver = locks === undefined ? base : recovering;
  const node = world.nodes.get(nodeId)?.info;
  if (node === undefined) throw new Error(`${file}: holds no node ${nodeId}`);
  return {
    driver,
    node,
    migrationUri: simMigrationUri(dir),
    vmInfo: (vmId) => {
      const vm = world.vms.get(vmId);
      return vm?.node === nodeId ? vm.info : undefined;
    },
    define(info) {
      adopt();
      if (world.vms.get(info.id)?.node === nodeId) return;
      world.vms.set(info.id, { info: create(VmInfoSchema, info), node: nodeId, state: "stopped" });
      persist();
      locks?.define(info, nodeId);
      note("define", info.id);
    },
    close: () => clearInterval(timer),
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
    // Its own name and an address from it, not the generated first node's (hv01,
    // 192.0.2.2). Only shown: two nodes may still share an address (254 of them).
    const info = create(NodeInfoSchema, {
      ...n.info,
      id: create(NodeIdSchema, { id: options.nodeId }),
      hostname: `${options.nodeId.toLowerCase()}.sim.debvisor.internal`.slice(0, 253),
      ip: `192.0.2.${((createHash("sha256").update(nodeKey(options.nodeId)).digest()[0] ?? 0) % 254) + 1}`,
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
