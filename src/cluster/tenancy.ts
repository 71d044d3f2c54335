import type { NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

/** Whether a caller acting in `tenant` (undefined: cluster-wide) may see `vm`. */
export function visibleTo(vm: VmInfo, tenant: string | undefined): boolean {
  return tenant === undefined || vm.tenant === tenant;
}

/** Only the VMs a tenant may see, for lists that embed VMs (node health, node detail). */
export function visibleVms(vms: readonly VmInfo[], tenant: string | undefined): VmInfo[] {
  return tenant === undefined ? [...vms] : vms.filter((vm) => vm.tenant === tenant);
}

/** A node summary whose health and VM counts cover only the VMs the tenant may see. */
export function scopeNode(node: NodeSummary, tenant: string | undefined): NodeSummary {
  if (tenant === undefined) return node;
  const vms = visibleVms(node.health?.vms ?? [], tenant);
  // The counts cover only what the tenant may see: totals would tell it
  // that other tenants' VMs are there, and how big they are.
  let vcpus = 0;
  let memory = 0n;
  for (const vm of vms) {
    vcpus += vm.vcpus;
    memory += vm.memoryBytes;
  }
  return {
    ...node,
    health: node.health === undefined ? undefined : { ...node.health, vms },
    vmCount: vms.length,
    vcpusAllocated: vcpus,
    memoryAllocatedBytes: memory,
  };
}
