import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { DomainSpec } from "./hypervisor-driver.js";

/**
 * The simulation's description of a domain defined from `spec`. A new disk
 * (size > 0) is created with it, so no other domain may already have a disk
 * of that name (DATASET_EXISTS); an existing one is attached as named. Live
 * migration is allowed unless the CPU is host-passthrough.
 */
export function simulatedVmInfo(spec: DomainSpec, others: Iterable<{ info: VmInfo }>): VmInfo {
  const disks = spec.disks.map((d) =>
    create(DatasetRefSchema, {
      backend: d.backend === "zfs" ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD,
      pool: d.pool,
      name: d.name,
    }),
  );
  const key = (backend: StorageBackend, pool: string, name: string) => `${backend}|${pool}/${name}`;
  const fresh = new Set(
    spec.disks.flatMap((d, i) => {
      const ref = disks[i];
      return d.sizeBytes > 0n && ref !== undefined ? [key(ref.backend, ref.pool, ref.name)] : [];
    }),
  );
  for (const other of others)
    for (const disk of other.info.disks)
      if (fresh.has(key(disk.backend, disk.pool, disk.name))) throw new RpcError("DATASET_EXISTS");
  return create(VmInfoSchema, {
    id: spec.id,
    name: spec.name || spec.id,
    vcpus: spec.vcpus,
    memoryBytes: spec.memoryBytes,
    disks,
    ha: spec.ha,
    liveMigratable: spec.cpuModel !== "host-passthrough",
    cpuModel: spec.cpuModel || "host-model",
  });
}
