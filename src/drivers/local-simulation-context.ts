// What every part of a local simulation shares: the node's world (loaded
// from its directory or seeded), the inner simulated driver acting on it,
// the action log, the shared storage's disk locks and the fencing rules.

import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { RpcError } from "../core/index.js";
import type { DefiningDriver, JobAbortingDriver, RecoveringDriver } from "./hypervisor-driver.js";
import type { LocalSimulationOptions } from "./local-simulation.js";
import { createSimFencing, type SimFencing } from "./local-simulation-fencing.js";
import { seedLocalWorld } from "./seed-local-world.js";
import {
  lockNamesOf,
  openSimulatedDiskLocks,
  type SimulatedDiskLocks,
} from "./simulated-disk-locks.js";
import { createSimulatedNodeDriver } from "./simulated-node-driver.js";
import { openSimulatedWatchdog } from "./simulated-watchdog.js";
import { loadWorld, type SimWorld, saveWorld } from "./simulated-world.js";

/** The state a local simulation's parts share, opened once by createLocalSimulation. */
export interface LocalSimContext {
  readonly nodeId: string;
  /** The node's directory. */
  readonly dir: string;
  /** The world's file (`sim-world.json`). */
  readonly file: string;
  readonly world: SimWorld;
  readonly readOnly: boolean;
  /** How long a start, stop, define or undefine takes before it takes effect. */
  readonly actionMs: number;
  /** The simulated driver over the world, which the local simulation wraps. */
  readonly inner: RecoveringDriver & DefiningDriver & JobAbortingDriver;
  /** The shared storage's disk locks, when there is a shared storage. */
  readonly locks: SimulatedDiskLocks | undefined;
  readonly fencing: SimFencing;
  /** Writes the world (not in read-only mode). */
  persist(): void;
  /** Appends an action to `sim-actions.log` (not in read-only mode). */
  note(action: string, vmId: string): void;
  /** Records `vmId` running here, with its disk locks taken under `generation` in the same step. */
  startHere(vmId: string, generation: bigint, define?: () => void): void;
}

/**
 * Opens the node's directory (created unless read-only), its world (seeded
 * and written on first start) and the shared storage's locks, defining
 * there the domains of this node.
 */
export function openLocalSimContext(options: LocalSimulationOptions): LocalSimContext {
  const { nodeId, dir } = options;
  const readOnly = options.readOnly ?? false;
  if (!readOnly) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, "sim-world.json");
  const actions = join(dir, "sim-actions.log");
  const world = loadWorld(file, options.now) ?? seedLocalWorld(options);
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
    watchdog: openSimulatedWatchdog(join(dir, "watchdog.json"), options.bootIdFile),
    readOnly,
    persist,
    note,
    onWatchdogReset: options.onWatchdogReset,
    onFencedOff: options.onFencedOff,
  });
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
  return {
    nodeId,
    dir,
    file,
    world,
    readOnly,
    actionMs,
    inner,
    locks,
    fencing,
    persist,
    note,
    startHere,
  };
}
