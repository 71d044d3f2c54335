/**
 * A replication job following its VM: when the job's dataset now belongs to
 * a VM on another node (a migration or failover moved it), the job is
 * re-pointed there before it runs.
 */
import { type Logger, RpcError, sameNode } from "../core/index.js";
import type { ReplicationJobRecord } from "../gen/debvisor/store/v1/storage_records_pb.js";
import type { DatasetOwner } from "./replicate.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";

/** What {@link createReplicationFollower} works with. */
export interface ReplicationFollowerDeps {
  readonly jobs: ReplicationJobs;
  readonly log: Logger;
  /** The node the VM owning a dataset runs on, if known (see ReplicationRunnerOptions). */
  readonly ownerNode?: DatasetOwner;
}

/** Re-points a job after its VM. */
export interface ReplicationFollower {
  /**
   * When the job's dataset now belongs to a VM on another node (a migration
   * or failover moved it), re-points the job there: from the VM's node to the
   * job's target, or, when the VM moved to the target itself, the other way
   * round (the next send is incremental from the snapshot both hold). Returns
   * the re-pointed job and a note saying what changed; undefined when
   * nothing had to.
   */
  followVm(
    stored: StoredJob,
    signal: AbortSignal,
  ): Promise<{ job: ReplicationJobRecord; note: string } | undefined>;
}

/** Creates a {@link ReplicationFollower}. */
export function createReplicationFollower(deps: ReplicationFollowerDeps): ReplicationFollower {
  const { jobs, log } = deps;
  return {
    async followVm(stored, signal) {
      const plan = stored.job.plan;
      const dataset = plan?.dataset;
      const source = plan?.source?.nodeId?.id ?? "";
      const target = plan?.target?.nodeId?.id ?? "";
      if (dataset === undefined) return undefined;
      const owner = await deps.ownerNode?.(dataset, signal);
      if (owner === undefined || sameNode(owner, source)) return undefined;
      const reverse = sameNode(owner, target);
      const next = reverse ? { source: owner, target: source } : { source: owner, target };
      const moved = await jobs.repoint(stored, next.source, next.target, signal);
      if (moved === undefined)
        throw new RpcError("REPLICATION_SOURCE_MOVED", {
          message: `the dataset's vm now runs on ${owner}, and another job already sends it to ${next.target} (or this job changed meanwhile); delete one of them`,
        });
      const note = reverse
        ? `the vm moved from ${source} to ${owner}, the job's target: direction reversed, now ${owner} -> ${source} from the common snapshot`
        : `the vm moved from ${source} to ${owner}: source re-pointed, now ${owner} -> ${target}`;
      log.info(
        { jobId: stored.job.jobId, from: source, to: owner, reverse },
        "replication job followed its vm",
      );
      return { job: moved.job, note };
    },
  };
}
