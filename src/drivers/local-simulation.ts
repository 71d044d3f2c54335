import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { RpcError, throwIfAborted } from "../core/index.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type NodeInfo, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DefiningDriver, DomainStatus, MigrateOptions } from "./hypervisor-driver.js";
import { readHandoffs, sendHandoff, simMigrationUri, simNodeDir } from "./sim-handoff.js";
import { createSimulatedNodeDriver, simulatedTransfer } from "./simulated-node-driver.js";
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
  /** Only look: write nothing, adopt nothing (`debvisor-agent status` beside a running agent). */
  readonly readOnly?: boolean;
  readonly now: number;
}

/** One node's simulated hypervisor, owned by that node's agent process. */
export interface LocalSimulation {
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
  });
  const actionMs = options.actionMs ?? 0;
  const note = (action: string, vmId: string) => {
    if (!readOnly) appendFileSync(actions, `${Date.now()} ${action} ${vmId}\n`, { mode: 0o600 });
  };

  /** Takes in domains other nodes handed over (read-only: shows them, as they are about to be). */
  const adopt = () => {
    let changed = false;
    readHandoffs(
      dir,
      (h) => {
        world.vms.set(h.info.id, { info: h.info, node: nodeId, state: h.state });
        changed = true;
        if (!readOnly) note(`adopt-from-${h.from}`, h.info.id);
      },
      !readOnly,
    );
    if (changed) persist();
  };
  adopt();
  const timer = readOnly ? undefined : setInterval(adopt, ADOPT_EVERY_MS);
  timer?.unref();

  async function migrate(vmId: string, uri: string, m: MigrateOptions): Promise<void> {
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
      onProgress?.(simulatedTransfer(total, percent, live));
    }
    await abortableSleep(stepMs, signal);
    onProgress?.({ phase: "switchover", percent: 99, bytesTransferred: total, bytesTotal: total });
    // Past this point the domain is the destination's: no abort applies.
    sendHandoff(destDir, { info: vm.info, state: vm.state, from: nodeId });
    world.vms.delete(vmId);
    persist();
    note("migrate-out", vmId);
    onProgress?.({ phase: "completed", percent: 100, bytesTransferred: total, bytesTotal: total });
  }

  const withAdopt =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    (...a: A): Promise<R> => {
      adopt();
      return f(...a);
    };
  const driver: DefiningDriver = {
    kind: inner.kind,
    nodeId,
    capabilities: { liveMigration: true, offlineMigration: true },
    list: withAdopt((signal: AbortSignal) => inner.list(signal)),
    info: withAdopt(
      (vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined> =>
        inner.info(vmId, signal),
    ),
    start: withAdopt(async (vmId: string, signal: AbortSignal) => {
      if (actionMs > 0) await abortableSleep(actionMs, signal);
      await inner.start(vmId, signal);
      note("start", vmId);
    }),
    stop: withAdopt(async (vmId: string, stopOptions: { force: boolean; signal: AbortSignal }) => {
      if (actionMs > 0) await abortableSleep(actionMs, stopOptions.signal);
      await inner.stop(vmId, stopOptions);
      note(stopOptions.force ? "force-stop" : "stop", vmId);
    }),
    migrate: withAdopt((vmId: string, to: { uri: string }, m: MigrateOptions) =>
      migrate(vmId, to.uri, m),
    ),
    define: withAdopt(
      async (spec: Parameters<DefiningDriver["define"]>[0], signal: AbortSignal) => {
        if (actionMs > 0) await abortableSleep(actionMs, signal);
        await inner.define(spec, signal);
        note("define", spec.id);
      },
    ),
    undefine: withAdopt(
      async (vmId: string, undefineOptions: Parameters<DefiningDriver["undefine"]>[1]) => {
        if (actionMs > 0) await abortableSleep(actionMs, undefineOptions.signal);
        await inner.undefine(vmId, undefineOptions);
        note(undefineOptions.force ? "force-undefine" : "undefine", vmId);
      },
    ),
  };
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
    const info = create(NodeInfoSchema, {
      ...n.info,
      id: create(NodeIdSchema, { id: options.nodeId }),
    });
    world.nodes.set(options.nodeId, { ...n, info });
  }
  for (const [id, vm] of generated.vms) {
    const vmId = `${options.nodeId}-${id}`.slice(0, 63);
    world.vms.set(vmId, {
      info: create(VmInfoSchema, { ...vm.info, id: vmId }),
      node: options.nodeId,
      state: vm.state,
    });
  }
  return world;
}
