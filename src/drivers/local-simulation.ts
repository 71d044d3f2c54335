// One node's simulated hypervisor, owned by that node's agent process. The
// parts: local-simulation-context.ts (world, locks, fencing, action log),
// handoff-adopter.ts, local-domain-driver.ts, local-migration.ts,
// local-recovery.ts and seed-local-world.ts.

import { create } from "@bufbuild/protobuf";
import type { NodeInfo } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { createHandoffAdopter } from "./handoff-adopter.js";
import type { DefiningDriver, DiskHoldingDriver, RecoveringDriver } from "./hypervisor-driver.js";
import { createLocalDomainDriver } from "./local-domain-driver.js";
import { createLocalMigration } from "./local-migration.js";
import { createLocalRecovery } from "./local-recovery.js";
import { openLocalSimContext } from "./local-simulation-context.js";
import { simMigrationUri } from "./sim-handoff.js";

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
  /**
   * Told the HA VMs a watchdog reset stopped, when the reset is carried out
   * (the first call after the agent wakes or starts again): no agent ran to
   * stop them, so only this tells the control plane they are to run again.
   */
  readonly onWatchdogReset?: (haVmIds: readonly string[]) => void;
  /**
   * Told the HA VMs this node stopped because another node took their
   * disks' locks (noted `fenced-stop`): the node did not choose that stop,
   * so its control plane hears of it as of a self-fence.
   */
  readonly onFencedOff?: (haVmIds: readonly string[]) => void;
  /**
   * Where the host's boot id is read (default Linux's): a different id than
   * the watchdog file's is a reboot, which stops every domain.
   */
  readonly bootIdFile?: string;
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
  /**
   * Stops adopting handed-over domains in the background; read-only, also
   * closes the shared storage's connection (a reader in a longer-lived
   * process, e.g. a test, keeps no file open). A running agent's stays open
   * until the process ends: operations left running at its stop may still
   * write their locks.
   */
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
  const ctx = openLocalSimContext(options);
  const { nodeId, dir, file, world, locks, persist, note } = ctx;
  const adopt = createHandoffAdopter(ctx);
  adopt();
  const timer = ctx.readOnly ? undefined : setInterval(adopt, ADOPT_EVERY_MS);
  timer?.unref();

  const base = createLocalDomainDriver(ctx, adopt, createLocalMigration(ctx, options));
  const recovering: DefiningDriver & RecoveringDriver & DiskHoldingDriver = {
    ...base,
    ...createLocalRecovery(ctx, adopt),
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
    close() {
      clearInterval(timer);
      if (ctx.readOnly) locks?.close();
    },
  };
}
