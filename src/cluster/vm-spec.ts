import { create } from "@bufbuild/protobuf";
import type { DomainSpec } from "../drivers/index.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, type VmSpec, VmSpecSchema } from "../gen/debvisor/v1/vm_pb.js";

/** The spec a reported VM has (adoption, dev mode's seeding): its shape, disks as existing. */
export function specOfReported(vm: VmInfo): VmSpec {
  return create(VmSpecSchema, {
    name: vm.name,
    vcpus: vm.vcpus,
    memoryBytes: vm.memoryBytes,
    disks: vm.disks.map((dataset) => ({ dataset, sizeBytes: 0n })),
    ha: vm.ha,
    cpuModel: vm.cpuModel,
  });
}

/** The hypervisor's view of a spec: what a CREATE_VM operation carries. */
export function domainSpecOf(vmId: string, spec: VmSpec): DomainSpec {
  return {
    id: vmId,
    name: spec.name,
    vcpus: spec.vcpus,
    memoryBytes: spec.memoryBytes,
    disks: spec.disks.map((d) => ({
      backend: d.dataset?.backend === StorageBackend.BACKEND_ZFS ? "zfs" : "rbd",
      pool: d.dataset?.pool ?? "",
      name: d.dataset?.name ?? "",
      sizeBytes: d.sizeBytes,
    })),
    ha: spec.ha,
    cpuModel: spec.cpuModel,
  };
}
