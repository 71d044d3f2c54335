import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { canDefine, type HypervisorDriver, type StorageDriver } from "../drivers/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";

/**
 * The driver VM creations run with: a define that makes a disk anew (size
 * > 0) is refused with DATASET_EXISTS, nothing defined, when this node's
 * storage already holds a dataset of that name. The control plane checks
 * the name against what it knows (records, VMs' disks), but a disk left
 * behind by a deleted VM (DeleteVm keeps storage) is no VM's and nobody's
 * record: another tenant's create naming it as new was given the old
 * volume, its data and its snapshots (an adversarial review;
 * test/tenancy-boundaries.test.ts). Asked here, on the node that would make
 * it, the storage itself answers. Without storage (`none`), as before.
 */
export function newDisksChecked(
  driver: HypervisorDriver,
  storage: StorageDriver | undefined,
  nodeId: string,
): HypervisorDriver {
  if (storage === undefined || !canDefine(driver)) return driver;
  const define: typeof driver.define = async (spec, signal) => {
    for (const d of spec.disks) {
      if (d.sizeBytes <= 0n) continue;
      const ref = create(DatasetRefSchema, {
        backend: d.backend === "zfs" ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD,
        pool: d.pool,
        name: d.name,
      });
      if ((await storage.listSnapshots(ref, signal, nodeId)) !== undefined)
        throw new RpcError("DATASET_EXISTS", {
          message: `${d.pool}/${d.name} exists on this node's storage; a new disk needs a new name`,
        });
    }
    return driver.define(spec, signal);
  };
  // Defined, not assigned: drivers are often frozen, and the rest is inherited as it is.
  return Object.create(driver, { define: { value: define, enumerable: true } }) as HypervisorDriver;
}
