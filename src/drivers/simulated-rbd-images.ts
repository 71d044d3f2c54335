// The simulated storage's RBD image work: protecting snapshots, cloning
// images from them, and deleting or flattening images. ZFS datasets refuse
// it with STORAGE_UNSUPPORTED.

import { create } from "@bufbuild/protobuf";
import { RpcError, throwIfAborted } from "../core/index.js";
import { DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { isZfs, type SimulatedCopies } from "./simulated-copies.js";
import type { SimulatedStorage } from "./simulated-storage.js";
import type { SimulatedStorageFaults } from "./simulated-storage-faults.js";
import { datasetKey } from "./storage-driver.js";
import { backendName, snapshotSpec } from "./storage-names.js";

/** The RBD image methods of {@link SimulatedStorage}. */
export type SimulatedRbdImages = Pick<
  SimulatedStorage,
  | "protectSnapshot"
  | "listClones"
  | "cloneSnapshot"
  | "imageParent"
  | "deleteImage"
  | "flattenImage"
>;

/** Creates the image methods over the shared copies. */
export function createSimulatedRbdImages(
  state: SimulatedCopies,
  faults: SimulatedStorageFaults,
): SimulatedRbdImages {
  const { copies, copyKey, copyOf, need, snapOf } = state;
  return {
    async protectSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      faults.failIfFaulted("protect", target.dataset);
      if (isZfs(target.dataset)) throw new RpcError("STORAGE_UNSUPPORTED");
      snapOf(need(target.dataset), target.name).protected = true;
    },
    async listClones(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      snapOf(need(target.dataset), target.name);
      return state.clonesOf(datasetKey(target.dataset), target.name);
    },
    async cloneSnapshot(target, image, signal) {
      snapshotSpec(target.dataset, target.name);
      backendName(image, "new_image");
      throwIfAborted(signal);
      faults.failIfFaulted("clone", target.dataset);
      if (isZfs(target.dataset) || isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const source = need(target.dataset);
      if (!snapOf(source, target.name).protected) throw new RpcError("SNAPSHOT_NOT_PROTECTED");
      if (copyOf(image) !== undefined) throw new RpcError("DATASET_EXISTS");
      copies.set(copyKey(image), {
        dataset: create(DatasetRefSchema, image),
        sizeBytes: source.sizeBytes,
        snapshots: [],
        parent: { key: datasetKey(target.dataset), snapshot: target.name },
      });
    },
    async imageParent(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const parent = need(image).parent;
      if (parent === undefined) return undefined;
      const from = copies.get(parent.key);
      return from === undefined ? undefined : { dataset: from.dataset, name: parent.snapshot };
    },
    async deleteImage(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      faults.failIfFaulted("deleteImage", image);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const copy = need(image);
      const key = datasetKey(image);
      if (copy.snapshots.some((s) => state.clonesOf(key, s.name).length > 0))
        throw new RpcError("IMAGE_HAS_CLONES");
      copies.delete(copyKey(image));
    },
    async flattenImage(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      faults.failIfFaulted("flatten", image);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const copy = need(image);
      if (copy.parent === undefined) throw new RpcError("IMAGE_NOT_A_CLONE");
      copy.parent = undefined;
    },
  };
}
