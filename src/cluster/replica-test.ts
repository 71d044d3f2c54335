/**
 * The replica test of one plan: whether a ZFS disk of the VM has a copy on
 * a node, the catalogue asked once per disk when it can list copies.
 */
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { ReplicaLookup } from "./migration-planner.js";

/** Whether a ZFS disk has a copy on a node. */
export type ReplicaTest = (disk: DatasetRef, nodeId: string) => Promise<boolean>;

/** The replica test of one plan: the catalogue asked once per disk when it can list copies. */
export async function replicaTest(
  vm: VmInfo,
  replicas: ReplicaLookup,
  signal: AbortSignal | undefined,
): Promise<ReplicaTest> {
  const list = replicas.replicasOf?.bind(replicas);
  if (list === undefined) return (disk, nodeId) => replicas.hasReplica(disk, nodeId, signal);
  const byDisk = new Map<DatasetRef, Set<string>>();
  for (const disk of vm.disks) {
    if (disk.backend === StorageBackend.BACKEND_ZFS)
      byDisk.set(disk, new Set((await list(disk, signal)).map((r) => r.nodeId)));
  }
  return async (disk, nodeId) => byDisk.get(disk)?.has(nodeId) ?? false;
}
