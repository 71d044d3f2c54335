/**
 * The Storage service's ZFS replication handlers: plan, run now, status,
 * list, delete and watch. `createReplicationHandlers` composes them from
 * the caller's view of jobs (replication-job-visibility.ts) and the watch
 * (replication-watch.ts); job ids and tenants' spaces are in
 * replication-job-ids.ts, the API's messages in replication-wire.ts (both
 * re-exported here).
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  invalid,
  paginate,
  principalOf,
  RpcError,
  type ServiceImpl,
  sameNode,
  scopeOf,
} from "../core/index.js";
import { backendName, type StorageDriver } from "../drivers/index.js";
import { ReplicationJobRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  StorageBackend,
  type StorageService,
  ZfsReplicationPlanSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import { type DatasetAccess, diskNode } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { scopedJobId } from "./replication-job-ids.js";
import { createReplicationJobVisibility } from "./replication-job-visibility.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";
import { resolveReplicationPolicy } from "./replication-policy.js";
import type { ReplicationRunner } from "./replication-runner.js";
import { createReplicationWatch } from "./replication-watch.js";
import { jobMessage, statusMessage } from "./replication-wire.js";
import { filteredScope } from "./tenancy.js";
import type { WatchQuota } from "./watch-quota.js";

export { scopedJobId, shownJobId, tenantOfJobId } from "./replication-job-ids.js";
export { jobMessage, statusMessage } from "./replication-wire.js";

type Handlers = Pick<
  ServiceImpl<typeof StorageService>,
  | "planZfsReplication"
  | "runZfsReplication"
  | "getReplicationStatus"
  | "listReplicationJobs"
  | "deleteReplicationJob"
  | "watchReplication"
>;

/** What the replication handlers need. */
export interface ReplicationHandlerDeps {
  readonly storage: StorageDriver;
  readonly inventory: Inventory;
  readonly clock: Clock;
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
  readonly runner: ReplicationRunner;
  readonly closing?: AbortSignal;
  /** Replication policies by name (`storage.replication.policies`): `policy: gold` means their string. */
  readonly policies?: Readonly<Record<string, string>>;
  /** Open watches per caller and tenant (WatchReplication counts as any Watch* does). */
  readonly quota?: WatchQuota;
}

/** ZFS replication jobs: plan, run now, status, list, delete, watch. */
export function createReplicationHandlers(deps: ReplicationHandlerDeps): Handlers {
  const { storage, inventory, clock, jobs, access, runner } = deps;
  const { visibleJob, visibilityOf } = createReplicationJobVisibility({ jobs, access });

  return {
    async planZfsReplication(req, ctx) {
      const dataset = req.dataset;
      if (dataset === undefined) throw invalid("dataset: required");
      if (dataset.backend !== StorageBackend.BACKEND_ZFS)
        throw invalid("dataset.backend: replication needs a ZFS dataset (BACKEND_ZFS)");
      backendName(dataset);
      const source = req.source?.nodeId?.id ?? "";
      const target = req.target?.nodeId?.id ?? "";
      if (source === "" || target === "") throw invalid("source and target: required");
      if (source === target) throw invalid("target: must be another node than source");
      const policy = resolveReplicationPolicy(req.policy, deps.policies);
      const place = await access.resolve(dataset, ctx.tenant, ctx.signal);
      for (const node of [source, target])
        if ((await inventory.getNode(node, ctx.signal)) === undefined)
          throw new RpcError("NODE_NOT_FOUND");
      if ((await storage.listSnapshots(dataset, ctx.signal, source)) === undefined)
        throw new RpcError("DATASET_NOT_FOUND", {
          message: "dataset not found on the source node",
        });
      // A disk replicates from where its VM runs: from a replica, a run would send stale data
      // (onto the live disk, where the target is the VM's node). Each run checks it again.
      // Every VM naming the disk counts, seen by the caller or not; only a node of one the
      // caller may see is named.
      const runsOn = await diskNode(inventory, dataset, ctx.signal, ctx.tenant === undefined);
      if (runsOn !== undefined && !sameNode(runsOn, source))
        throw new RpcError("REPLICATION_SOURCE_MOVED", {
          message:
            place.nodeId !== undefined && sameNode(place.nodeId, runsOn)
              ? `the dataset's vm runs on ${runsOn}, not on ${source}: plan the replication from ${runsOn}`
              : `the dataset's vm does not run on ${source}`,
        });
      const given = req.jobId || `repl-${randomBytes(5).toString("hex")}`;
      // Per tenant: another tenant's job of the same name is neither reached nor revealed.
      const jobId = ctx.tenant === undefined ? given : scopedJobId(ctx.tenant, given);
      const now = clock.now();
      const { job } = await jobs.create(
        create(ReplicationJobRecordSchema, {
          jobId,
          plan: create(ZfsReplicationPlanSchema, { ...req, jobId }),
          intervalMs: BigInt(policy.intervalMs),
          keepSnapshots: policy.keep,
          bandwidthLimitBytesPerSecond: BigInt(policy.bandwidthLimit),
          createdBy: principalOf(ctx).id,
          createdAtMs: BigInt(now),
        }),
        now,
        ctx.signal,
      );
      return jobMessage(job, ctx.tenant);
    },

    async runZfsReplication(req, ctx) {
      const { jobId } = (await visibleJob(req.jobId, ctx)).job;
      // The run outlives a caller who stops waiting: it goes on, and WatchReplication follows it.
      const run = runner.run(jobId);
      run.catch(() => {});
      const outcome = await untilAborted(run, ctx.signal);
      return statusMessage(outcome ?? (await visibleJob(req.jobId, ctx)).status, ctx.tenant);
    },

    async getReplicationStatus(req, ctx) {
      return statusMessage((await visibleJob(req.jobId, ctx)).status, ctx.tenant);
    },

    async listReplicationJobs(req, ctx) {
      const visible = visibilityOf(ctx, filteredScope(scopeOf(ctx), req.tenant));
      const all = await jobs.list(ctx.signal);
      const shown: StoredJob[] = [];
      for (const j of all) if (await visible(j)) shown.push(j);
      const page = paginate(shown, (j) => j.job.jobId, req.pageSize, req.pageToken);
      return {
        jobs: page.items.map((j) => jobMessage(j, ctx.tenant)),
        nextPageToken: page.nextPageToken,
      };
    },

    async deleteReplicationJob(req, ctx) {
      const { jobId } = (await visibleJob(req.jobId, ctx)).job;
      return jobMessage(await jobs.delete(jobId, ctx.signal), ctx.tenant);
    },
    ...createReplicationWatch(deps, visibleJob),
  };
}

/** Resolves with the promise's value, or undefined once `signal` aborts first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
