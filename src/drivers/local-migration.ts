// A local simulation's migration, run here on the source like libvirt's
// peer-to-peer migration: progress, a fault at a percent, then the domain
// (and its disks' locks) handed to the destination's directory, so it
// completes even if the control plane that asked for it is gone.

import { RpcError, throwIfAborted } from "../core/index.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { MigrateOptions } from "./hypervisor-driver.js";
import type { LocalSimulationOptions } from "./local-simulation.js";
import type { LocalSimContext } from "./local-simulation-context.js";
import { sendHandoff, simNodeDir } from "./sim-handoff.js";
import { lockNamesOf } from "./simulated-disk-locks.js";
import { checkMigratingState, simulatedTransfer } from "./simulated-migration.js";

/** Migrates `vmId` to the node at `to.uri` (`sim://<dir>`). */
export type LocalMigration = (
  vmId: string,
  to: { nodeId: string; uri: string },
  m: MigrateOptions,
) => Promise<void>;

/**
 * Creates the migration; `options` gives its duration and the faults asked
 * at each step (failMigrationAt, holdMigrationAt).
 */
export function createLocalMigration(
  ctx: LocalSimContext,
  options: LocalSimulationOptions,
): LocalMigration {
  const { inner, world, dir, nodeId, fencing, locks, persist, note } = ctx;
  return async function migrate(vmId, to, m) {
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
  };
}
