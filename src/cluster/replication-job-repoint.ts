/**
 * A replication job re-pointed at new source and target nodes when its
 * dataset's VM moved: the job record and its target key change in one
 * transaction, only while the record is unchanged and no other job sends
 * the dataset to the new target. Part of `createReplicationJobs`
 * (replication-jobs.ts); the follower (replication-follower.ts) decides when.
 */
import { create } from "@bufbuild/protobuf";
import {
  ReplicationJobRecordSchema,
  ReplicationTargetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { NodeRefSchema } from "../gen/debvisor/v1/migration_pb.js";
import { ZfsReplicationPlanSchema } from "../gen/debvisor/v1/storage_pb.js";
import { encodeMessage, type KvStore } from "../store/index.js";
import { JOBS_PREFIX, targetKey } from "./replication-job-keys.js";
import type { ReplicationJobs } from "./replication-jobs.js";

/** Creates the store-backed {@link ReplicationJobs.repoint}. */
export function createReplicationJobRepoint(store: KvStore): Pick<ReplicationJobs, "repoint"> {
  return {
    async repoint(stored, source, target, signal) {
      const plan = stored.job.plan;
      if (plan === undefined) return undefined;
      const job = create(ReplicationJobRecordSchema, {
        ...stored.job,
        plan: create(ZfsReplicationPlanSchema, {
          ...plan,
          source: create(NodeRefSchema, { nodeId: { id: source } }),
          target: create(NodeRefSchema, { nodeId: { id: target } }),
        }),
      });
      const oldTarget = targetKey(plan.dataset, plan.target?.nodeId?.id ?? "");
      const newTarget = targetKey(plan.dataset, target);
      const moves = oldTarget !== newTarget;
      const txn = await store.txn(
        {
          compares: [
            { key: JOBS_PREFIX + stored.job.jobId, modRevision: stored.jobRevision },
            ...(moves ? [{ key: newTarget, modRevision: 0 }] : []),
          ],
          success: [
            {
              type: "put",
              key: JOBS_PREFIX + stored.job.jobId,
              value: encodeMessage(ReplicationJobRecordSchema, job),
            },
            ...(moves
              ? [
                  { type: "delete" as const, key: oldTarget },
                  {
                    type: "put" as const,
                    key: newTarget,
                    value: encodeMessage(ReplicationTargetRecordSchema, {
                      jobId: stored.job.jobId,
                    }),
                  },
                ]
              : []),
          ],
        },
        { signal },
      );
      return txn.succeeded ? { job, jobRevision: txn.revision } : undefined;
    },
  };
}
