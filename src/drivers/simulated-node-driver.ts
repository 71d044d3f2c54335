import { ID_PATTERN, RpcError, throwIfAborted } from "../core/index.js";
import { abortableSleep } from "./abortable-sleep.js";
import type {
  DefiningDriver,
  DomainState,
  DomainStatus,
  JobAbortingDriver,
  MigrateOptions,
  MigrationDestination,
  MigrationProgress,
  RecoveringDriver,
} from "./hypervisor-driver.js";
import { simulatedVmInfo } from "./simulated-definition.js";
import type { SimVm, SimWorld } from "./simulated-world.js";

/** What a simulated node driver shares with the rest of the simulation. */
export interface SimDriverContext {
  readonly world: SimWorld;
  /** Writes the world after a change that must survive a restart. */
  persist(): void;
  /** Time a migration takes, in milliseconds of real time. */
  readonly migrationMs: number;
  /** Progress reports of a migration. */
  readonly migrationSteps: number;
  /** Percent at which a migration of this VM is made to fail (fault injection), if any. */
  failAt(vmId: string): number | undefined;
  /** Percent at which a migration of this VM stops progressing until aborted (fault injection), if any. */
  holdAt(vmId: string): number | undefined;
  /** Each running migration's job, by VM: aborting it aborts the migration wherever it was asked from. */
  readonly jobs: Map<string, AbortController>;
}

/** A simulated node's hypervisor: acts on the shared world like libvirt acts on a host. */
export function createSimulatedNodeDriver(
  nodeId: string,
  ctx: SimDriverContext,
): RecoveringDriver & DefiningDriver & JobAbortingDriver {
  const { world } = ctx;

  function node() {
    const n = world.nodes.get(nodeId);
    if (n === undefined || !n.alive) throw new RpcError("BACKEND_UNAVAILABLE");
    return n;
  }
  function domain(vmId: string): SimVm {
    checkId(vmId);
    node();
    const vm = world.vms.get(vmId);
    if (vm === undefined || vm.node !== nodeId) throw new RpcError("VM_NOT_FOUND");
    return vm;
  }
  function status(vm: SimVm): DomainStatus {
    return {
      id: vm.info.id,
      state: vm.state,
      vcpus: vm.info.vcpus,
      memoryBytes: vm.info.memoryBytes,
      persistent: true,
      migrating: world.inflight.has(vm.info.id),
    };
  }
  function runningElsewhere(vmId: string): boolean {
    const vm = world.vms.get(vmId);
    return vm !== undefined && vm.node !== nodeId && vm.state === "running";
  }

  return {
    kind: "simulation",
    nodeId,
    capabilities: { liveMigration: true, offlineMigration: true },
    async list(signal) {
      await roundTrip(signal);
      node();
      return [...world.vms.values()]
        .filter((v) => v.node === nodeId)
        .map(status)
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
    async info(vmId, signal) {
      await roundTrip(signal);
      checkId(vmId);
      node();
      const vm = world.vms.get(vmId);
      return vm !== undefined && vm.node === nodeId ? status(vm) : undefined;
    },
    async start(vmId, signal) {
      await roundTrip(signal);
      const vm = domain(vmId);
      if (vm.state === "running") return;
      vm.state = "running";
      ctx.persist();
    },
    async stop(vmId, { signal }) {
      await roundTrip(signal);
      const vm = domain(vmId);
      if (vm.state === "stopped") return;
      vm.state = "stopped";
      ctx.persist();
    },
    async recover(vmId, fromNodeId, signal) {
      await roundTrip(signal);
      checkId(vmId);
      node();
      const vm = world.vms.get(vmId);
      if (vm === undefined || vm.node !== fromNodeId) throw new RpcError("VM_NOT_FOUND");
      if (vm.state === "running") {
        // The world knows what the control plane cannot: record the double run.
        world.violations.push(`${vmId} started on ${nodeId} while still running on ${fromNodeId}`);
      }
      vm.node = nodeId;
      vm.state = "running";
      ctx.persist();
    },
    async migrate(vmId, to, options) {
      await migrate(vmId, to, options);
    },
    async abortJob(vmId, signal) {
      await roundTrip(signal);
      // Like `virsh domjobabort` on the source: only the node the job runs on can abort it.
      if (world.inflight.has(vmId) && world.vms.get(vmId)?.node === nodeId)
        ctx.jobs.get(vmId)?.abort(new RpcError("CANCELLED", { message: "migration job aborted" }));
    },
    async define(spec, signal) {
      await roundTrip(signal);
      checkId(spec.id);
      node();
      // One world: a domain of that id anywhere, or a new disk another domain has, is taken.
      if (world.vms.has(spec.id)) throw new RpcError("VM_EXISTS");
      const info = simulatedVmInfo(spec, world.vms.values());
      world.vms.set(spec.id, { info, node: nodeId, state: "stopped" });
      ctx.persist();
    },
    async undefine(vmId, { force, signal }) {
      await roundTrip(signal);
      const vm = domain(vmId);
      if (world.inflight.has(vmId)) throw new RpcError("MIGRATION_IN_PROGRESS");
      if (vm.state === "running" && !force) throw new RpcError("VM_RUNNING");
      world.vms.delete(vmId);
      ctx.persist();
    },
  };

  async function migrate(vmId: string, to: MigrationDestination, options: MigrateOptions) {
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
  }
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

/**
 * A real backend answers after a round trip, during which the caller may
 * give up: the simulation yields once, then honours the signal.
 */
async function roundTrip(signal: AbortSignal): Promise<void> {
  throwIfAborted(signal);
  await new Promise<void>((resolve) => setImmediate(resolve));
  throwIfAborted(signal);
}

/** Refuses what no hypervisor would accept as a domain name, before touching anything. */
function checkId(vmId: string): void {
  if (!ID_PATTERN.test(vmId)) throw new RpcError("INVALID_ARGUMENT", { message: "invalid vm id" });
}
