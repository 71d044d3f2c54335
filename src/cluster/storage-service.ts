import {
  defineService,
  notImplemented,
  paginate,
  RpcError,
  type ServiceBinding,
} from "../core/index.js";
import { datasetKey, type StorageDriver } from "../drivers/index.js";
import { StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { Inventory } from "./inventory.js";
import { visibleTo } from "./tenancy.js";

/** Dependencies of the StorageService handlers. */
export interface StorageServiceDeps {
  readonly storage: StorageDriver;
  /** Datasets belong to the tenant of the VM whose disk they are. */
  readonly inventory: Inventory;
}

/**
 * StorageService. Listing snapshots is real (from the storage driver); the
 * operations that change storage are not built yet and answer UNIMPLEMENTED.
 */
export function createStorageService(deps: StorageServiceDeps): ServiceBinding {
  return defineService(
    StorageService,
    {
      createSnapshot: { permission: "storage:snapshot:create", mutating: true },
      pruneSnapshots: { permission: "storage:snapshot:delete", mutating: true },
      planZfsReplication: { permission: "storage:replication:plan", mutating: true },
      runZfsReplication: { permission: "storage:replication:execute", mutating: true },
      getReplicationStatus: { permission: "storage:replication:status", mutating: false },
      createRbdTemplateSnapshot: { permission: "storage:snapshot:create", mutating: true },
      cloneRbdFromTemplate: { permission: "storage:clone", mutating: true },
      listSnapshots: { permission: "storage:snapshot:list", mutating: false },
      listReplicationJobs: { permission: "storage:replication:status", mutating: false },
    },
    {
      createSnapshot: notImplemented,
      pruneSnapshots: notImplemented,
      planZfsReplication: notImplemented,
      runZfsReplication: notImplemented,
      getReplicationStatus: notImplemented,
      createRbdTemplateSnapshot: notImplemented,
      cloneRbdFromTemplate: notImplemented,
      async listSnapshots(req, ctx) {
        if (req.dataset === undefined)
          throw new RpcError("INVALID_ARGUMENT", { message: "dataset: required" });
        if (ctx.tenant !== undefined) {
          // A dataset outside the caller's tenant answers exactly like a missing one.
          const key = datasetKey(req.dataset);
          const owners = (await deps.inventory.listVms(ctx.signal)).filter((vm) =>
            vm.disks.some((d) => datasetKey(d) === key),
          );
          if (!owners.some((vm) => visibleTo(vm, ctx.tenant)))
            throw new RpcError("DATASET_NOT_FOUND");
        }
        const snapshots = await deps.storage.listSnapshots(req.dataset, ctx.signal);
        if (snapshots === undefined) throw new RpcError("DATASET_NOT_FOUND");
        const page = paginate(
          snapshots,
          (s) => s.ref?.snapshotName ?? "",
          req.pageSize,
          req.pageToken,
        );
        return { snapshots: page.items, nextPageToken: page.nextPageToken };
      },
      async listReplicationJobs() {
        return { jobs: [], nextPageToken: "" };
      },
    },
  );
}
