// The simulated storage's snapshots: listing, taking, deleting and holding
// them, on a node's ZFS dataset or on an RBD image.

import { type Clock, RpcError, throwIfAborted } from "../core/index.js";
import { HOUR_MS, type SimulatedCopies } from "./simulated-copies.js";
import type { SimulatedStorage } from "./simulated-storage.js";
import type { SimulatedStorageFaults } from "./simulated-storage-faults.js";
import type { StoredSnap } from "./simulated-storage-state.js";
import { datasetKey } from "./storage-driver.js";
import { backendName, snapshotSpec } from "./storage-names.js";

/** The snapshot methods of {@link SimulatedStorage}. */
export type SimulatedSnapshots = Pick<
  SimulatedStorage,
  "setHold" | "datasetSize" | "listSnapshots" | "createSnapshot" | "deleteSnapshot"
>;

/** Creates the snapshot methods over the shared copies; new snapshots are stamped by `clock`. */
export function createSimulatedSnapshots(
  state: SimulatedCopies,
  faults: SimulatedStorageFaults,
  clock: Clock,
): SimulatedSnapshots {
  const { copyOf, need, snapOf, info } = state;
  return {
    setHold(target, held) {
      const snap = snapOf(need(target.dataset, target.nodeId), target.name);
      snap.holds = held ? snap.holds + 1 : Math.max(0, snap.holds - 1);
    },
    async datasetSize(dataset, signal, nodeId) {
      backendName(dataset);
      throwIfAborted(signal);
      return copyOf(dataset, nodeId)?.sizeBytes;
    },
    async listSnapshots(dataset, signal, nodeId) {
      backendName(dataset);
      throwIfAborted(signal);
      faults.failIfFaulted("listSnapshots", dataset);
      const copy = copyOf(dataset, nodeId);
      return copy?.snapshots.map((s) => info(copy, s));
    },
    async createSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      faults.failIfFaulted("createSnapshot", target.dataset);
      const copy = need(target.dataset, target.nodeId);
      if (copy.snapshots.some((s) => s.name === target.name)) throw new RpcError("SNAPSHOT_EXISTS");
      const now = clock.now();
      const last = copy.snapshots[copy.snapshots.length - 1];
      const snap: StoredSnap = {
        name: target.name,
        createdMs: now,
        usedBytes: state.changed(copy, last?.createdMs ?? now - 24 * HOUR_MS, now),
        holds: 0,
        protected: false,
      };
      copy.snapshots.push(snap);
      return info(copy, snap);
    },
    async deleteSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      faults.failIfFaulted("deleteSnapshot", target.dataset);
      const copy = need(target.dataset, target.nodeId);
      const snap = snapOf(copy, target.name);
      if (snap.holds > 0) throw new RpcError("SNAPSHOT_HELD");
      if (state.clonesOf(datasetKey(copy.dataset), snap.name).length > 0)
        throw new RpcError("SNAPSHOT_HAS_CLONES");
      copy.snapshots = copy.snapshots.filter((s) => s !== snap);
    },
  };
}
