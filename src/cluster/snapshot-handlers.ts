/**
 * The snapshot handlers of the StorageService: take, list and delete
 * snapshots here; prune in prune-snapshots-handler.ts, RBD templates and
 * clones in rbd-template-handlers.ts, the shared reads in
 * dataset-snapshots.ts.
 */
import { type Clock, paginate, RpcError, type ServiceImpl } from "../core/index.js";
import { backendName, type StorageDriver, snapshotSpec } from "../drivers/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import type { StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import { createDatasetSnapshots, orderKey, required } from "./dataset-snapshots.js";
import { createPruneSnapshotsHandler } from "./prune-snapshots-handler.js";
import { createRbdTemplateHandlers } from "./rbd-template-handlers.js";
import type { ReplicationJobs } from "./replication-jobs.js";

type Handlers = Pick<
  ServiceImpl<typeof StorageService>,
  | "createSnapshot"
  | "listSnapshots"
  | "deleteSnapshot"
  | "pruneSnapshots"
  | "createRbdTemplateSnapshot"
  | "cloneRbdFromTemplate"
>;

/** What the snapshot handlers need. */
export interface SnapshotHandlerDeps {
  readonly storage: StorageDriver;
  readonly clock: Clock;
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
}

const DEFAULT_LABEL = "manual";

/** Snapshots (take, list, delete, prune) and RBD templates and clones. */
export function createSnapshotHandlers(deps: SnapshotHandlerDeps): Handlers {
  const { storage, clock, jobs, access } = deps;
  const snapshots = createDatasetSnapshots({ storage, clock, jobs });
  const { snapshotter, replicationBases, snapshotsOf, take } = snapshots;
  const { pruneSnapshots } = createPruneSnapshotsHandler({ clock, access, snapshots });
  const templates = createRbdTemplateHandlers({ storage, clock, access, snapshots });

  return {
    async createSnapshot(req, ctx) {
      const dataset = required(req.dataset, "dataset");
      backendName(dataset);
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      const made = await take(dataset, req.label || DEFAULT_LABEL, nodeId, ctx.signal);
      return { status: StatusCode.STATUS_OK, message: "snapshot created", snapshot: made.ref };
    },

    async listSnapshots(req, ctx) {
      const dataset = required(req.dataset, "dataset");
      backendName(dataset);
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      const page = paginate(
        await snapshotsOf(dataset, nodeId, ctx.signal),
        orderKey,
        req.pageSize,
        req.pageToken,
      );
      return { snapshots: page.items, nextPageToken: page.nextPageToken };
    },

    async deleteSnapshot(req, ctx) {
      const ref = required(req.snapshot, "snapshot");
      const dataset = required(ref.dataset, "snapshot.dataset");
      snapshotSpec(dataset, ref.snapshotName, "snapshot");
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      if ((await replicationBases(dataset, ctx.signal)).has(ref.snapshotName))
        throw new RpcError("SNAPSHOT_IN_USE");
      await snapshotter().deleteSnapshot({ dataset, name: ref.snapshotName, nodeId }, ctx.signal);
      return { status: StatusCode.STATUS_OK, message: "snapshot deleted", snapshot: ref };
    },
    pruneSnapshots,
    ...templates,
  };
}
