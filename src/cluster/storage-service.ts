import {
  type Clock,
  defineService,
  type Logger,
  type ServiceBinding,
  silentLogger,
} from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import {
  type DatasetRef,
  type DeleteImageRequest,
  type DeleteSnapshotRequest,
  type FlattenImageRequest,
  type JobRef,
  type ListSnapshotsRequest,
  type PruneRequest,
  type RbdCloneRequest,
  type RbdTemplateRequest,
  type SnapshotRequest,
  StorageService,
  type WatchReplicationRequest,
  type ZfsReplicationPlan,
} from "../gen/debvisor/v1/storage_pb.js";
import type { KvStore } from "../store/index.js";
import { createDatasetAccess, diskNode } from "./dataset-access.js";
import { createDatasetInventory } from "./dataset-inventory.js";
import { createImageHandlers } from "./image-handlers.js";
import type { Inventory } from "./inventory.js";
import { createReplicationHandlers } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import { createReplicationRunner, type ReplicationRunner } from "./replication-runner.js";
import { createSnapshotHandlers } from "./snapshot-handlers.js";
import { createWatchQuota, type WatchQuota } from "./watch-quota.js";

/** Dependencies of the StorageService handlers. */
export interface StorageServiceDeps {
  readonly storage: StorageDriver;
  /** Datasets belong to the tenant of the VM whose disk they are. */
  readonly inventory: Inventory;
  /** Replication jobs and records of datasets the control plane created. */
  readonly store: KvStore;
  readonly clock: Clock;
  /** Replication policies by name, as configured. */
  readonly replicationPolicies?: Readonly<Record<string, string>>;
  /**
   * Tenants the access policy names (bindings), so a tenant with no VM or
   * dataset yet still owns its name against squatting clones.
   */
  readonly policyTenants?: () => Iterable<string>;
  /** Runs replication jobs (share it with the scheduler); default: one of its own over `storage`. */
  readonly runner?: ReplicationRunner;
  readonly logger?: Logger;
  /** Ends WatchReplication streams (the daemon's shutdown). */
  readonly closing?: AbortSignal;
  /** Open watches per caller and tenant, shared with the other watches; default: one of its own. */
  readonly quota?: WatchQuota;
}

/**
 * StorageService: snapshots with retention, ZFS replication jobs and RBD
 * templates and clones, scoped to tenants through the VMs that own the
 * datasets (a dataset a caller may not see answers like a missing one).
 */
export function createStorageService(deps: StorageServiceDeps): ServiceBinding {
  const jobs = createReplicationJobs(deps.store);
  const access = createDatasetAccess({
    inventory: deps.inventory,
    store: deps.store,
    policyTenants: deps.policyTenants,
  });
  const runner =
    deps.runner ??
    createReplicationRunner({
      store: deps.store,
      jobs,
      storage: deps.storage,
      clock: deps.clock,
      logger: deps.logger ?? silentLogger,
      closing: deps.closing,
      ownerNode: (dataset, signal) => diskNode(deps.inventory, dataset, signal),
    });
  const shared = {
    ...deps,
    jobs,
    access,
    runner,
    policies: deps.replicationPolicies,
    quota: deps.quota ?? createWatchQuota(),
  };
  const dataset = (id: (req: never) => DatasetRef | undefined) =>
    ({ kind: "dataset", id }) as const;
  const job = { kind: "replication-job", id: (req: JobRef) => req.jobId } as const;
  return defineService(
    StorageService,
    {
      createSnapshot: {
        permission: "storage:snapshot:create",
        mutating: true,
        target: dataset((req: SnapshotRequest) => req.dataset),
      },
      pruneSnapshots: {
        permission: "storage:snapshot:delete",
        mutating: true,
        target: dataset((req: PruneRequest) => req.dataset),
      },
      planZfsReplication: {
        permission: "storage:replication:plan",
        mutating: true,
        target: dataset((req: ZfsReplicationPlan) => req.dataset),
      },
      runZfsReplication: { permission: "storage:replication:execute", mutating: true, target: job },
      getReplicationStatus: {
        permission: "storage:replication:status",
        mutating: false,
        target: job,
      },
      createRbdTemplateSnapshot: {
        permission: "storage:snapshot:create",
        mutating: true,
        target: dataset((req: RbdTemplateRequest) => req.image),
      },
      // A creation in the tenant the request names; the handler checks the template is visible there.
      cloneRbdFromTemplate: {
        permission: "storage:clone",
        mutating: true,
        target: { kind: "tenant", id: (req: RbdCloneRequest) => req.tenant },
      },
      listSnapshots: {
        permission: "storage:snapshot:list",
        mutating: false,
        target: dataset((req: ListSnapshotsRequest) => req.dataset),
      },
      listReplicationJobs: { permission: "storage:replication:status", mutating: false },
      deleteSnapshot: {
        permission: "storage:snapshot:delete",
        mutating: true,
        target: dataset((req: DeleteSnapshotRequest) => req.snapshot?.dataset),
      },
      deleteReplicationJob: {
        permission: "storage:replication:delete",
        mutating: true,
        target: job,
      },
      // One job, or (job_id empty) every job the scope may see.
      watchReplication: {
        permission: "storage:replication:status",
        mutating: false,
        target: { ...job, id: (req: WatchReplicationRequest) => req.jobId, optional: true },
      },
      listDatasets: { permission: "storage:dataset:list", mutating: false },
      listImages: { permission: "storage:dataset:list", mutating: false },
      deleteImage: {
        permission: "storage:image:delete",
        mutating: true,
        target: dataset((req: DeleteImageRequest) => req.image),
      },
      flattenImage: {
        permission: "storage:image:flatten",
        mutating: true,
        target: dataset((req: FlattenImageRequest) => req.image),
      },
    },
    {
      ...createSnapshotHandlers(shared),
      ...createReplicationHandlers(shared),
      ...createDatasetInventory(shared),
      ...createImageHandlers(shared),
    },
  );
}
