/**
 * A simulated node's view of the shared world's domains: its node (alive or
 * unavailable), its domains by id and their status, as a libvirt host sees
 * its own; plus the round trip and id check every simulated call makes.
 */
import { ID_PATTERN, RpcError, throwIfAborted } from "../core/index.js";
import type { DomainStatus } from "./hypervisor-driver.js";
import type { SimNode, SimVm, SimWorld } from "./simulated-world.js";

/** The domains of one simulated node. */
export interface SimulatedDomains {
  /** The node, if alive (BACKEND_UNAVAILABLE otherwise). */
  node(): SimNode;
  /** A domain on this node (VM_NOT_FOUND otherwise; the id checked, the node alive). */
  domain(vmId: string): SimVm;
  /** The domain's status as the driver reports it. */
  status(vm: SimVm): DomainStatus;
  /** Whether the VM runs on another node. */
  runningElsewhere(vmId: string): boolean;
}

/** Creates the {@link SimulatedDomains} of `nodeId` in `world`. */
export function createSimulatedDomains(nodeId: string, world: SimWorld): SimulatedDomains {
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
  return { node, domain, status, runningElsewhere };
}

/**
 * A real backend answers after a round trip, during which the caller may
 * give up: the simulation yields once, then honours the signal.
 */
export async function roundTrip(signal: AbortSignal): Promise<void> {
  throwIfAborted(signal);
  await new Promise<void>((resolve) => setImmediate(resolve));
  throwIfAborted(signal);
}

/** Refuses what no hypervisor would accept as a domain name, before touching anything. */
export function checkId(vmId: string): void {
  if (!ID_PATTERN.test(vmId)) throw new RpcError("INVALID_ARGUMENT", { message: "invalid vm id" });
}
