import {
  type Clock,
  defineService,
  type Logger,
  type ServiceBinding,
  silentLogger,
} from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import { StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { KvStore } from "../store/index.js";
import { createDatasetAccess } from "./dataset-access.js";
import { createDatasetInventory } from "./dataset-inventory.js";
import type { Inventory } from "./inventory.js";
import { createReplicationHandlers } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import { createReplicationRunner, type ReplicationRunner } from "./replication-runner.js";
import { createSnapshotHandlers } from "./snapshot-handlers.js";

/** Dependencies of the StorageService handlers. */
export interface StorageServiceDeps {
  readonly storage: StorageDriver;
  /** Datasets belong to the tenant of the VM whose disk they are. */
  readonly inventory: Inventory;
  /** Replication jobs and records of datasets the control plane created. */
  readonly store: KvStore;
  readonly clock: Clock;
  /** Runs replication jobs (share it with the scheduler); default: one of its own over `storage`. */
  readonly runner?: ReplicationRunner;
  readonly logger?: Logger;
  /** Ends WatchReplication streams (the daemon's shutdown). */
  readonly closing?: AbortSignal;
}

/**
 * StorageService: snapshots with retention, ZFS replication jobs and RBD
 * templates and clones, scoped to tenants through the VMs that own the
 * datasets (a dataset a caller may not see answers like a missing one).
 */
export function createStorageService(deps: StorageServiceDeps): ServiceBinding {
  const jobs = createReplicationJobs(deps.store);
  const access = createDatasetAccess({ inventory: deps.inventory, store: deps.store });
  const runner =
    deps.runner ??
    createReplicationRunner({
      store: deps.store,
      jobs,
      storage: deps.storage,
      clock: deps.clock,
      logger: deps.logger ?? silentLogger,
      closing: deps.closing,
    });
  const shared = { ...deps, jobs, access, runner };
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
      deleteSnapshot: { permission: "storage:snapshot:delete", mutating: true },
      deleteReplicationJob: { permission: "storage:replication:delete", mutating: true },
      watchReplication: { permission: "storage:replication:status", mutating: false },
      listDatasets: { permission: "storage:dataset:list", mutating: false },
    },
    {
      ...createSnapshotHandlers(shared),
      ...createReplicationHandlers(shared),
      ...createDatasetInventory(shared),
    },
  );
}
