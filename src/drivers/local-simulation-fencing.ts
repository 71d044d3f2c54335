import type { SimulatedDiskLocks } from "./simulated-disk-locks.js";
import { lockNamesOf } from "./simulated-disk-locks.js";
import type { SimulatedWatchdog } from "./simulated-watchdog.js";
import type { SimWorld } from "./simulated-world.js";

/** What {@link createSimFencing} acts on. */
export interface SimFencingOptions {
  readonly nodeId: string;
  readonly world: SimWorld;
  /** The shared storage's locks; absent: nothing is fenced by storage. */
  readonly locks?: SimulatedDiskLocks;
  readonly watchdog?: SimulatedWatchdog;
  /** Only report (for `status` while the agent runs): never write the world. */
  readonly readOnly: boolean;
  persist(): void;
  note(action: string, vmId: string): void;
  /** Told the HA VMs a watchdog reset stopped (the agent tells them as self-fenced). */
  onWatchdogReset?(haVmIds: readonly string[]): void;
  /** Told the HA VMs stopped because another node took their disks' locks (told as self-fenced too). */
  onFencedOff?(haVmIds: readonly string[]): void;
}

/** How the node's hardware and storage overrule its domain list. */
export interface SimFencing {
  /**
   * Applies what happened behind the hypervisor's back, before any call
   * acts or answers: an expired watchdog reset the node (every domain
   * stopped, noted `watchdog-reset`); a domain whose disk lock another node
   * took lost its storage and stopped (noted `fenced-stop`), as qemu stops
   * when its RBD lock is broken and its client blocklisted. The HA VMs
   * stopped either way are told to `onWatchdogReset` or `onFencedOff`.
   * Returns the domains to report as stopped without writing (observe-only
   * mode).
   */
  check(): Set<string>;
}

/** The watchdog and storage rules of one node's local simulation. */
export function createSimFencing(options: SimFencingOptions): SimFencing {
  const { nodeId, world, locks, watchdog } = options;
  const running = () =>
    [...world.vms.values()].filter((v) => v.node === nodeId && v.state === "running");
  return {
    check() {
      const down = new Set<string>();
      if (watchdog?.expired()) {
        for (const vm of running()) down.add(vm.info.id);
        if (!options.readOnly) {
          const ha: string[] = [];
          for (const vm of running()) {
            vm.state = "stopped";
            options.note("watchdog-reset", vm.info.id);
            if (vm.info.ha) ha.push(vm.info.id);
          }
          options.persist();
          watchdog.resetDone();
          if (ha.length > 0) options.onWatchdogReset?.(ha);
        }
      }
      if (locks !== undefined) {
        const ha: string[] = [];
        let changed = false;
        for (const vm of running()) {
          if (locks.lost(lockNamesOf(vm.info), nodeId).length === 0) continue;
          down.add(vm.info.id);
          if (options.readOnly) continue;
          vm.state = "stopped";
          changed = true;
          options.note("fenced-stop", vm.info.id);
          if (vm.info.ha) ha.push(vm.info.id);
        }
        if (changed) options.persist();
        if (ha.length > 0) options.onFencedOff?.(ha);
      }
      return options.readOnly ? down : new Set();
    },
  };
}
