import { RpcError } from "../core/index.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import {
  canClone,
  canManageImages,
  canReplicate,
  canSnapshot,
  type RbdImageDriver,
  type StorageDriver,
  type ZfsReplicationDriver,
} from "./storage-driver.js";

/** The backends a router sends calls to; a missing one has no datasets. */
export interface StorageBackends {
  readonly zfs?: StorageDriver;
  readonly rbd?: StorageDriver;
}

/**
 * One driver over a ZFS and an RBD backend, picked by each dataset's
 * backend. A backend that is not configured has no datasets
 * (DATASET_NOT_FOUND); one without an ability answers STORAGE_UNSUPPORTED.
 */
export function createStorageRouter(
  backends: StorageBackends,
): ZfsReplicationDriver & RbdImageDriver {
  const route = (dataset: DatasetRef): StorageDriver | undefined =>
    dataset.backend === StorageBackend.BACKEND_ZFS
      ? backends.zfs
      : dataset.backend === StorageBackend.BACKEND_RBD
        ? backends.rbd
        : undefined;
  const pick = (dataset: DatasetRef): StorageDriver => {
    const driver = route(dataset);
    if (driver === undefined) throw new RpcError("DATASET_NOT_FOUND");
    return driver;
  };
  const able = <T extends StorageDriver>(
    dataset: DatasetRef,
    guard: (d: StorageDriver) => d is T,
  ): T => {
    const driver = pick(dataset);
    if (!guard(driver)) throw new RpcError("STORAGE_UNSUPPORTED");
    return driver;
  };
  return {
    listSnapshots: async (dataset, signal, nodeId) =>
      route(dataset)?.listSnapshots(dataset, signal, nodeId),
    createSnapshot: (t, signal) => able(t.dataset, canSnapshot).createSnapshot(t, signal),
    deleteSnapshot: (t, signal) => able(t.dataset, canSnapshot).deleteSnapshot(t, signal),
    sendSnapshot: (send) => able(send.dataset, canReplicate).sendSnapshot(send),
    protectSnapshot: (t, signal) => able(t.dataset, canClone).protectSnapshot(t, signal),
    listClones: (t, signal) => able(t.dataset, canClone).listClones(t, signal),
    cloneSnapshot: (t, image, signal) => able(t.dataset, canClone).cloneSnapshot(t, image, signal),
    imageParent: (image, signal) => able(image, canManageImages).imageParent(image, signal),
    deleteImage: (image, signal) => able(image, canManageImages).deleteImage(image, signal),
    flattenImage: (image, signal) => able(image, canManageImages).flattenImage(image, signal),
  };
}
