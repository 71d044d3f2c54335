// Faults injected into the simulated storage: the next matching calls fail
// with STORAGE_UNAVAILABLE, as if a disk or link broke.

import { RpcError } from "../core/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { StorageFault, StorageOp } from "./simulated-storage.js";
import { datasetKey } from "./storage-driver.js";

/** The faults waiting for their calls. */
export interface SimulatedStorageFaults {
  /** Makes the next matching calls fail. */
  inject(fault: StorageFault): void;
  /** A matching injected fault, consumed; undefined when none applies. */
  take(op: StorageOp, d: DatasetRef): StorageFault | undefined;
  /** Consumes a matching fault and throws STORAGE_UNAVAILABLE for it. */
  failIfFaulted(op: StorageOp, d: DatasetRef): void;
}

/** Creates the list, empty. */
export function createSimulatedStorageFaults(): SimulatedStorageFaults {
  const faults: { fault: StorageFault; left: number }[] = [];
  /** A matching injected fault, consumed; undefined when none applies. */
  const take = (op: StorageOp, d: DatasetRef): StorageFault | undefined => {
    const i = faults.findIndex(
      (f) =>
        f.fault.op === op &&
        (f.fault.dataset === undefined || datasetKey(f.fault.dataset) === datasetKey(d)),
    );
    const hit = faults[i];
    if (hit === undefined) return undefined;
    hit.left -= 1;
    if (hit.left <= 0) faults.splice(i, 1);
    return hit.fault;
  };
  return {
    inject(fault) {
      faults.push({ fault, left: fault.times ?? 1 });
    },
    take,
    failIfFaulted(op, d) {
      if (take(op, d) !== undefined)
        throw new RpcError("STORAGE_UNAVAILABLE", { cause: new Error(`injected ${op} fault`) });
    },
  };
}
