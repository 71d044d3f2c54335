/**
 * Replication jobs and their statuses as the API shows them: the store's
 * records become `ReplicationJob` and `ReplicationStatus` messages here,
 * with a tenant's ids unscoped (replication-job-ids.ts).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "../core/index.js";
import type { ReplicationStatusRecord } from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  type ReplicationJob,
  ReplicationJobSchema,
  type ReplicationStatus,
  ReplicationStatusSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import { shownJobId } from "./replication-job-ids.js";
import type { StoredJob } from "./replication-jobs.js";

/** A stored status as the API shows it (to `tenant`, with its ids unscoped). */
export function statusMessage(s: ReplicationStatusRecord, tenant?: string): ReplicationStatus {
  const ms = (v: bigint) => (v === 0n ? undefined : timestampFromMs(Number(v)));
  return create(ReplicationStatusSchema, {
    jobId: shownJobId(s.jobId, tenant),
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

/** A stored job as the API shows it (to `tenant`, with its ids unscoped). */
export function jobMessage(j: StoredJob, tenant?: string): ReplicationJob {
  const jobId = shownJobId(j.job.jobId, tenant);
  return create(ReplicationJobSchema, {
    jobId,
    plan: j.job.plan === undefined ? undefined : { ...j.job.plan, jobId },
    status: statusMessage(j.status, tenant),
    createdBy: j.job.createdBy,
    created: timestampFromMs(Number(j.job.createdAtMs)),
  });
}
