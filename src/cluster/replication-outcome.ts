/**
 * The end of a replication run: the status it leaves (success, or failure
 * with the retry backoff), the log line and the event telling it.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, formatBytes, type Logger, toRpcError } from "../core/index.js";
import {
  type ReplicationJobRecord,
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { ReplicationState } from "../gen/debvisor/v1/storage_pb.js";
import type { Replicated } from "./replicate.js";
import { big } from "./replication-run-lock.js";

/** Tells an event about a job (see createReplicationRunner). */
export type TellReplication = (
  jobId: string,
  type: string,
  message: string,
  reason?: string,
) => void;

/** What {@link createReplicationOutcome} works with. */
export interface ReplicationOutcomeDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly tell: TellReplication;
  /** First retry after a failure, doubling with each failure in a row... */
  readonly retryBaseMs: number;
  /** ...up to this, and never later than the job's own interval. */
  readonly retryMaxMs: number;
}

/** Builds the status a finished run records, and says how it went. */
export interface ReplicationOutcome {
  /** The status after a run that sent `done`, started at `started`, from the run's `status`. */
  succeeded(
    jobId: string,
    job: ReplicationJobRecord,
    status: ReplicationStatusRecord,
    started: number,
    done: Replicated,
  ): ReplicationStatusRecord;
  /** The status after a run that failed with `err`: FAILED, the next run after the backoff. */
  failed(
    jobId: string,
    job: ReplicationJobRecord,
    status: ReplicationStatusRecord,
    started: number,
    err: unknown,
  ): ReplicationStatusRecord;
}

/** Creates a {@link ReplicationOutcome}. */
export function createReplicationOutcome(deps: ReplicationOutcomeDeps): ReplicationOutcome {
  const { clock, log, tell, retryBaseMs, retryMaxMs } = deps;
  return {
    succeeded(jobId, job, status, started, done) {
      const now = clock.now();
      log.info(
        {
          jobId,
          bytes: done.bytes,
          incremental: done.base !== undefined,
          snapshot: done.snapshot,
          durationMs: now - started,
        },
        "replication run succeeded",
      );
      tell(
        jobId,
        "ReplicationSucceeded",
        `sent ${formatBytes(done.bytes)} (${done.base === undefined ? "full" : `incremental from ${done.base}`}) in ${Math.round((now - started) / 1000)} s; snapshot ${done.snapshot}`,
      );
      return create(ReplicationStatusRecordSchema, {
        ...status,
        state: ReplicationState.REPL_STATE_SUCCESS,
        lastSnapshotName: done.snapshot,
        bytesTransferred: big(done.bytes),
        durationMs: big(now - started),
        lastError: "",
        lastErrorReason: "",
        consecutiveFailures: 0,
        nextRunAtMs: big(started + Number(job.intervalMs)),
        lastSuccessAtMs: big(now),
        successfulRuns: status.successfulRuns + 1n,
        runningOn: "",
        sendingSnapshotName: "",
        updatedAtMs: big(now),
      });
    },

    failed(jobId, job, status, started, err) {
      const e = toRpcError(err);
      const now = clock.now();
      const failures = status.consecutiveFailures + 1;
      const retryIn = Math.min(
        retryBaseMs * 2 ** Math.min(failures - 1, 30),
        retryMaxMs,
        Number(job.intervalMs),
      );
      log.warn(
        { jobId, err, reason: e.reason, retryInMs: retryIn, failures },
        "replication run failed",
      );
      tell(
        jobId,
        "ReplicationFailed",
        `${e.reason === "INTERNAL" ? "internal error" : e.clientMessage}; retry in ${Math.round(retryIn / 1000)} s (${failures} failure(s) in a row)`,
        e.reason,
      );
      return create(ReplicationStatusRecordSchema, {
        ...status,
        state: ReplicationState.REPL_STATE_FAILED,
        durationMs: big(now - started),
        lastError: e.reason === "INTERNAL" ? "internal error" : e.clientMessage,
        lastErrorReason: e.reason,
        consecutiveFailures: failures,
        nextRunAtMs: big(now + retryIn),
        runningOn: "",
        sendingSnapshotName: "",
        updatedAtMs: big(now),
      });
    },
  };
}
