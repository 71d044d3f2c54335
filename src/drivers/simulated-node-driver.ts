import { RpcError } from "../core/index.js";
import type { DefiningDriver, JobAbortingDriver, RecoveringDriver } from "./hypervisor-driver.js";
import { simulatedVmInfo } from "./simulated-definition.js";
import { checkId, createSimulatedDomains, roundTrip } from "./simulated-domains.js";
import { createSimulatedMigrate } from "./simulated-migration.js";
import type { SimWorld } from "./simulated-world.js";

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

  const domains = createSimulatedDomains(nodeId, world);
  const { node, domain, status } = domains;
  const migrate = createSimulatedMigrate(nodeId, ctx, domains);

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
}
