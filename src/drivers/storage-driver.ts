import type { DatasetRef, SnapshotInfo } from "../gen/debvisor/v1/storage_pb.js";

/** What the control plane asks of a storage backend (ZFS, Ceph RBD, simulation). */
export interface StorageDriver {
  /** Snapshots of one dataset, oldest first; undefined when the dataset does not exist. */
  listSnapshots(dataset: DatasetRef, signal: AbortSignal): Promise<SnapshotInfo[] | undefined>;
}

/** A stable text key of a dataset, `zfs:tank/vm-1` or `rbd:rbd/vm-1`. */
export function datasetKey(dataset: DatasetRef): string {
  const backend = dataset.backend === 1 ? "zfs" : dataset.backend === 2 ? "rbd" : "unknown";
  return `${backend}:${dataset.pool}/${dataset.name}`;
}
