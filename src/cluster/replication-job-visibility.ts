/**
 * Which replication jobs a caller may see: in its space
 * (replication-job-ids.ts) and on a dataset visible to its tenant. Used by
 * every replication handler (replication-handlers.ts, replication-watch.ts);
 * a job the caller may not see is REPLICATION_JOB_NOT_FOUND, as one that
 * does not exist.
 */
import { type CallContext, type CallScope, RpcError, scopeOf } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import { inSpace, scopedJobId } from "./replication-job-ids.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";

/** What {@link createReplicationJobVisibility} works with. */
export interface ReplicationJobVisibilityDeps {
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
}

/** A caller's view of replication jobs. */
export interface ReplicationJobVisibility {
  /**
   * A job the caller may see, else REPLICATION_JOB_NOT_FOUND: in its space
   * ({@link inSpace}) and on a dataset visible to the caller's tenant.
   */
  visibleJob(jobId: string, ctx: CallContext): Promise<StoredJob>;
  /** Visibility of many jobs, asking once per dataset. */
  visibilityOf(ctx: CallContext, scope?: CallScope): (job: StoredJob) => Promise<boolean>;
}

/** Creates the {@link ReplicationJobVisibility} over `jobs` and `access`. */
export function createReplicationJobVisibility(
  deps: ReplicationJobVisibilityDeps,
): ReplicationJobVisibility {
  const { jobs, access } = deps;

  const visibleJob = async (jobId: string, ctx: CallContext): Promise<StoredJob> => {
    // A confined caller's ids live in its tenant's space first; an unscoped
    // (older or cluster-made) id is found only when its dataset is visible.
    for (const id of ctx.tenant === undefined ? [jobId] : [scopedJobId(ctx.tenant, jobId), jobId]) {
      if (!inSpace(id, scopeOf(ctx))) continue;
      const job = await jobs.get(id, ctx.signal);
      const dataset = job?.job.plan?.dataset;
      if (
        job !== undefined &&
        dataset !== undefined &&
        (await access.visible(dataset, ctx.tenant, ctx.signal))
      )
        return job;
    }
    throw new RpcError("REPLICATION_JOB_NOT_FOUND");
  };
  /** Whether the call's scope may see a dataset: one of its owners' tenants, or cluster-wide. */
  const seenBy = async (
    dataset: DatasetRef,
    ctx: CallContext,
    signal: AbortSignal,
    scope = scopeOf(ctx),
  ) => {
    return (
      scope.clusterWide || (await access.tenants(dataset, signal)).some((t) => scope.canSee(t))
    );
  };
  const visibilityOf = (ctx: CallContext, scope = scopeOf(ctx)) => {
    const cache = new Map<string, Promise<boolean>>();
    return (job: StoredJob) => {
      const dataset = job.job.plan?.dataset;
      if (dataset === undefined || !inSpace(job.job.jobId, scope)) return Promise.resolve(false);
      const key = datasetKey(dataset);
      let seen = cache.get(key);
      if (seen === undefined) {
        seen = seenBy(dataset, ctx, ctx.signal, scope);
        cache.set(key, seen);
      }
      return seen;
    };
  };

  return { visibleJob, visibilityOf };
}
