import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type CallContext,
  type Clock,
  invalid,
  paginate,
  principalOf,
  RpcError,
  type ServiceImpl,
} from "../core/index.js";
import { backendName, datasetKey, type StorageDriver } from "../drivers/index.js";
import {
  ReplicationJobRecordSchema,
  type ReplicationStatusRecord,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  type ReplicationJob,
  ReplicationJobSchema,
  ReplicationState,
  type ReplicationStatus,
  ReplicationStatusSchema,
  StorageBackend,
  type StorageService,
  ZfsReplicationPlanSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";
import { parseReplicationPolicy } from "./replication-policy.js";
import type { ReplicationRunner } from "./replication-runner.js";
import { timestampFromMs } from "./timestamp.js";

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
}

/** ZFS replication jobs: plan, run now, status, list, delete, watch. */
export function createReplicationHandlers(deps: ReplicationHandlerDeps): Handlers {
  const { storage, inventory, clock, jobs, access, runner } = deps;

  /** A job the caller may see (its dataset is visible to the caller's tenant), else REPLICATION_JOB_NOT_FOUND. */
  const visibleJob = async (jobId: string, ctx: CallContext): Promise<StoredJob> => {
    const job = await jobs.get(jobId, ctx.signal);
    const dataset = job?.job.plan?.dataset;
    if (
      job === undefined ||
      dataset === undefined ||
      !(await access.visible(dataset, ctx.tenant, ctx.signal))
    )
      throw new RpcError("REPLICATION_JOB_NOT_FOUND");
    return job;
  };
  /** Visibility of many jobs, asking once per dataset. */
  const visibilityOf = (ctx: CallContext) => {
    const cache = new Map<string, Promise<boolean>>();
    return (job: StoredJob) => {
      const dataset = job.job.plan?.dataset;
      if (dataset === undefined) return Promise.resolve(false);
      const key = datasetKey(dataset);
      let seen = cache.get(key);
      if (seen === undefined) {
        seen = access.visible(dataset, ctx.tenant, ctx.signal);
        cache.set(key, seen);
      }
      return seen;
    };
  };

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
      const policy = parseReplicationPolicy(req.policy);
      await access.resolve(dataset, ctx.tenant, ctx.signal);
      for (const node of [source, target])
        if ((await inventory.getNode(node, ctx.signal)) === undefined)
          throw new RpcError("NODE_NOT_FOUND");
      if ((await storage.listSnapshots(dataset, ctx.signal, source)) === undefined)
        throw new RpcError("DATASET_NOT_FOUND", {
          message: "dataset not found on the source node",
        });
      const jobId = req.jobId || `repl-${randomBytes(5).toString("hex")}`;
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
      return jobMessage(job);
    },

    async runZfsReplication(req, ctx) {
      await visibleJob(req.jobId, ctx);
      // The run outlives a caller who stops waiting: it goes on, and WatchReplication follows it.
      const run = runner.run(req.jobId);
      run.catch(() => {});
      const outcome = await untilAborted(run, ctx.signal);
      return statusMessage(outcome ?? (await visibleJob(req.jobId, ctx)).status);
    },

    async getReplicationStatus(req, ctx) {
      return statusMessage((await visibleJob(req.jobId, ctx)).status);
    },

    async listReplicationJobs(req, ctx) {
      const visible = visibilityOf(ctx);
      const all = await jobs.list(ctx.signal);
      const shown: StoredJob[] = [];
      for (const j of all) if (await visible(j)) shown.push(j);
      const page = paginate(shown, (j) => j.job.jobId, req.pageSize, req.pageToken);
      return { jobs: page.items.map(jobMessage), nextPageToken: page.nextPageToken };
    },

    async deleteReplicationJob(req, ctx) {
      await visibleJob(req.jobId, ctx);
      return jobMessage(await jobs.delete(req.jobId, ctx.signal));
    },

    async *watchReplication(req, ctx) {
      if (req.jobId !== "") await visibleJob(req.jobId, ctx);
      const stop = AbortSignal.any(
        deps.closing === undefined ? [ctx.signal] : [ctx.signal, deps.closing],
      );
      const shown = new Map<string, boolean>();
      try {
        for await (const change of jobs.watch(stop)) {
          if (req.jobId !== "" && change.jobId !== req.jobId) continue;
          if (change.status === undefined) {
            if (shown.get(change.jobId))
              yield create(ReplicationStatusSchema, {
                jobId: change.jobId,
                state: ReplicationState.REPL_STATE_UNKNOWN,
              });
            shown.delete(change.jobId);
            if (req.jobId !== "") return;
            continue;
          }
          let visible = shown.get(change.jobId);
          if (visible === undefined) {
            const job = await jobs.get(change.jobId, stop);
            const dataset = job?.job.plan?.dataset;
            visible = dataset !== undefined && (await access.visible(dataset, ctx.tenant, stop));
            shown.set(change.jobId, visible);
          }
          if (visible) yield statusMessage(change.status);
        }
      } catch (err) {
        // The stream ends quietly when the caller leaves or the daemon stops.
        if (!(stop.aborted && err instanceof RpcError && err.reason === "CANCELLED")) throw err;
      }
    },
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

/** A stored status as the API shows it. */
export function statusMessage(s: ReplicationStatusRecord): ReplicationStatus {
  const ms = (v: bigint) => (v === 0n ? undefined : timestampFromMs(Number(v)));
  return create(ReplicationStatusSchema, {
    jobId: s.jobId,
    state: s.state,
    lastSnapshotName: s.lastSnapshotName,
    bytesTransferred: s.bytesTransferred,
    durationMs: s.durationMs,
    lastError: s.lastError,
    lastErrorReason: s.lastErrorReason,
    lastUpdate: ms(s.updatedAtMs),
    bytesExpected: s.bytesExpected,
    incremental: s.incremental,
    baseSnapshotName: s.baseSnapshotName,
    consecutiveFailures: s.consecutiveFailures,
    nextRun: ms(s.nextRunAtMs),
    lastSuccess: ms(s.lastSuccessAtMs),
    successfulRuns: s.successfulRuns,
    followed: s.followed,
    followedAt: ms(s.followedAtMs),
  });
}

/** A stored job as the API shows it. */
export function jobMessage(j: StoredJob): ReplicationJob {
  return create(ReplicationJobSchema, {
    jobId: j.job.jobId,
    plan: j.job.plan,
    status: statusMessage(j.status),
    createdBy: j.job.createdBy,
    created: timestampFromMs(Number(j.job.createdAtMs)),
  });
}
