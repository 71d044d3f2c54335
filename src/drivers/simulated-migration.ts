/**
 * A live or offline migration on the simulated hypervisor: the job's
 * progress over time, fault injection (fail or hold at a percent), a
 * rollback when it fails, and the VM handed to its target when it ends.
 */
import { RpcError, throwIfAborted } from "../core/index.js";
import { abortableSleep } from "./abortable-sleep.js";
import type {
  DomainState,
  HypervisorDriver,
  MigrateOptions,
  MigrationDestination,
  MigrationProgress,
} from "./hypervisor-driver.js";
import type { SimulatedDomains } from "./simulated-domains.js";
import type { SimDriverContext } from "./simulated-node-driver.js";

/** Migrates a VM of this node to another: the driver's `migrate`. */
export type SimulatedMigrate = HypervisorDriver["migrate"];

/** Creates the {@link SimulatedMigrate} of node `nodeId`. */
export function createSimulatedMigrate(
  nodeId: string,
  ctx: SimDriverContext,
  domains: SimulatedDomains,
): SimulatedMigrate {
  const { world } = ctx;
  const { node, domain, runningElsewhere } = domains;
  return async function migrate(
    vmId: string,
    to: MigrationDestination,
    options: MigrateOptions,
  ): Promise<void> {
    const { signal, live, onProgress } = options;
    throwIfAborted(signal);
    const vm = domain(vmId);
    const target = world.nodes.get(to.nodeId);
    if (target === undefined || !target.alive || to.nodeId === nodeId)
      throw new RpcError("BACKEND_UNAVAILABLE");
    if (world.inflight.has(vmId)) throw new RpcError("MIGRATION_IN_PROGRESS");
    // Like libvirt: live needs a running domain, offline a stopped one.
    if (live && vm.state !== "running") throw new RpcError("MIGRATION_NOT_ALLOWED");
    if (!live && vm.state === "running") throw new RpcError("MIGRATION_NOT_ALLOWED");
    if (runningElsewhere(vmId)) throw new RpcError("BACKEND_FAILED");

    world.inflight.set(vmId, to.nodeId);
    ctx.persist();
    const total = live ? vm.info.memoryBytes + vm.info.memoryBytes / 4n : vm.info.memoryBytes / 8n;
    const steps = Math.max(1, ctx.migrationSteps);
    const failAt = ctx.failAt(vmId);
    const holdAt = ctx.holdAt(vmId);
    // The hypervisor's job: the caller's signal or an abortJob ends it.
    const job = new AbortController();
    ctx.jobs.set(vmId, job);
    const jobSignal = AbortSignal.any([signal, job.signal]);
    onProgress?.({ phase: "preparing", percent: 0, bytesTransferred: 0n, bytesTotal: total });
    try {
      for (let i = 1; i <= steps; i++) {
        await abortableSleep(ctx.migrationMs / (steps + 1), jobSignal);
        const percent = Math.min(99, Math.round((i / steps) * 100));
        if (failAt !== undefined && percent >= failAt) throw new RpcError("BACKEND_FAILED");
        if (!target.alive || !node().alive) throw new RpcError("BACKEND_UNAVAILABLE");
        checkMigratingState(vm.state, live);
        onProgress?.(simulatedTransfer(total, percent, live));
        // A held job makes no progress until it is aborted.
        while (holdAt !== undefined && percent >= holdAt) await abortableSleep(50, jobSignal);
      }
      await abortableSleep(ctx.migrationMs / (steps + 1), jobSignal);
      if (!target.alive || !node().alive) throw new RpcError("BACKEND_UNAVAILABLE");
      checkMigratingState(vm.state, live);
      onProgress?.({
        phase: "switchover",
        percent: 99,
        bytesTransferred: total,
        bytesTotal: total,
      });
    } catch (err) {
      // Roll back: the VM never left the source.
      world.inflight.delete(vmId);
      ctx.jobs.delete(vmId);
      ctx.persist();
      throw err;
    }
    world.inflight.delete(vmId);
    ctx.jobs.delete(vmId);
    vm.node = to.nodeId;
    ctx.persist();
    onProgress?.({ phase: "completed", percent: 100, bytesTransferred: total, bytesTotal: total });
  };
}

/** A simulated migration's progress at `percent` of `total` bytes. */
export function simulatedTransfer(
  total: bigint,
  percent: number,
  live: boolean,
): MigrationProgress {
  return {
    phase: "transferring",
    percent,
    bytesTransferred: (total * BigInt(percent)) / 100n,
    bytesTotal: total,
    downtimeEstimateMs: live ? Math.max(5, 300 - percent * 3) : undefined,
  };
}

/**
 * Fails a migration whose domain changed state under it, as libvirt fails
 * the job when the domain is destroyed (a self-fence, a watchdog reset, a
 * lost disk lock) or started meanwhile: handing it over would report a
 * live migration that SUCCEEDED with the VM stopped on its target.
 */
export function checkMigratingState(state: DomainState, live: boolean): void {
  if (live === (state === "running")) return;
  throw new RpcError("BACKEND_FAILED", {
    message: live
      ? "the domain stopped during the migration"
      : "the domain was started during the migration",
  });
}
