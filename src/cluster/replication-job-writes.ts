/**
 * The creation and deletion of replication jobs in the store, each a
 * compare-and-swap loop over the job, its status and its target key (a
 * deleted job's last snapshot stays protected as a retired base). Part of
 * `createReplicationJobs` (replication-jobs.ts).
 */
import { create, equals } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import {
  ReplicationJobRecordSchema,
  ReplicationStatusRecordSchema,
  ReplicationTargetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { ReplicationState, ZfsReplicationPlanSchema } from "../gen/debvisor/v1/storage_pb.js";
import { encodeMessage, type KvStore, LOST, retryWhileLost } from "../store/index.js";
import { jobKeys, retiredKey, targetKey } from "./replication-job-keys.js";
import type { ReplicationJobs } from "./replication-jobs.js";

/** Compare-and-swap attempts before giving up with CONFLICT. */
const MAX_ATTEMPTS = 8;

/** The creating and deleting half of {@link ReplicationJobs}. */
export type ReplicationJobWrites = Pick<ReplicationJobs, "create" | "delete">;

/** Creates the store-backed writes of `createReplicationJobs`; `get` reads a job back. */
export function createReplicationJobWrites(
  store: KvStore,
  get: ReplicationJobs["get"],
): ReplicationJobWrites {
  return {
    async create(job, nowMs, signal) {
      const keys = jobKeys(job.jobId);
      const target = targetKey(job.plan?.dataset, job.plan?.target?.nodeId?.id ?? "");
      return retryWhileLost(MAX_ATTEMPTS, async () => {
        const status = create(ReplicationStatusRecordSchema, {
          jobId: job.jobId,
          state: ReplicationState.REPL_STATE_PENDING,
          nextRunAtMs: BigInt(nowMs),
          updatedAtMs: BigInt(nowMs),
        });
        const txn = await store.txn(
          {
            compares: [
              { key: keys.job, modRevision: 0 },
              { key: target, modRevision: 0 },
            ],
            success: [
              { type: "put", key: keys.job, value: encodeMessage(ReplicationJobRecordSchema, job) },
              {
                type: "put",
                key: keys.status,
                value: encodeMessage(ReplicationStatusRecordSchema, status),
              },
              {
                type: "put",
                key: target,
                value: encodeMessage(ReplicationTargetRecordSchema, { jobId: job.jobId }),
              },
            ],
          },
          { signal },
        );
        // As written, not read back: a delete right after must not bring the job back.
        if (txn.succeeded)
          return {
            job: {
              job,
              jobRevision: txn.revision,
              status,
              statusRevision: txn.revision,
              lock: undefined,
            },
            created: true,
          };
        const existing = await get(job.jobId, signal);
        if (existing !== undefined) {
          if (
            existing.job.plan !== undefined &&
            job.plan !== undefined &&
            equals(ZfsReplicationPlanSchema, existing.job.plan, job.plan)
          )
            return { job: existing, created: false };
          throw new RpcError("REPLICATION_JOB_EXISTS", {
            message: "a replication job with this id and a different plan exists",
          });
        }
        if ((await store.get(target, { signal })) !== undefined)
          throw new RpcError("REPLICATION_JOB_EXISTS", {
            message: "another replication job already sends this dataset to that node",
          });
        return LOST;
      });
    },
    async delete(jobId, signal) {
      const keys = jobKeys(jobId);
      return retryWhileLost(MAX_ATTEMPTS, async () => {
        const existing = await get(jobId, signal);
        if (existing === undefined) throw new RpcError("REPLICATION_JOB_NOT_FOUND");
        if (existing.lock !== undefined) throw new RpcError("REPLICATION_RUNNING");
        const plan = existing.job.plan;
        const txn = await store.txn(
          {
            compares: [
              { key: keys.job, modRevision: existing.jobRevision },
              { key: keys.lock, modRevision: 0 },
            ],
            success: [
              { type: "delete", key: keys.job },
              { type: "delete", key: keys.status },
              { type: "delete", key: targetKey(plan?.dataset, plan?.target?.nodeId?.id ?? "") },
              // The data stays on the target, and so must the base a later job will need.
              ...(existing.status.lastSnapshotName === ""
                ? []
                : [
                    {
                      type: "put" as const,
                      key: retiredKey(plan?.dataset, plan?.target?.nodeId?.id ?? ""),
                      value: new TextEncoder().encode(existing.status.lastSnapshotName),
                    },
                  ]),
            ],
          },
          { signal },
        );
        return txn.succeeded ? existing : LOST;
      });
    },
  };
}
