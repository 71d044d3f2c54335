/**
 * The replication runner: one run of a job at a time across every daemon
 * sharing the store. It composes the run lock (replication-run-lock.ts), the
 * job following its VM (replication-follower.ts), the send itself
 * (replicate.ts) and the recorded outcome (replication-outcome.ts).
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import {
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { ReplicationState } from "../gen/debvisor/v1/storage_pb.js";
import type { KvStore } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { type DatasetOwner, replicate } from "./replicate.js";
import { createReplicationFollower } from "./replication-follower.js";
import { type ReplicationJobs, retiredKey, type StoredJob } from "./replication-jobs.js";
import { createReplicationOutcome } from "./replication-outcome.js";
import {
  big,
  createReplicationRunLock,
  type HeldRunLock,
  keepRunLockAlive,
} from "./replication-run-lock.js";

/** Options of {@link createReplicationRunner}. */
export interface ReplicationRunnerOptions {
  readonly store: KvStore;
  readonly jobs: ReplicationJobs;
  readonly storage: StorageDriver;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This daemon's name in run locks (default: random). */
  readonly holder?: string;
  /** Lease of a run lock (default 30 s), renewed every third of it: a dead daemon's lock lapses. */
  readonly lockTtlMs?: number;
  /** First retry after a failure (default 1 min), doubling with each failure in a row... */
  readonly retryBaseMs?: number;
  /** ...up to this (default 1 h), and never later than the job's own interval. */
  readonly retryMaxMs?: number;
  /** A running send records its progress in the store at most this often (default 1 s). */
  readonly progressIntervalMs?: number;
  /** Aborts runs in progress (the daemon's shutdown): they end FAILED and release their lock. */
  readonly closing?: AbortSignal;
  /**
   * The node the VM owning a dataset runs on, if known. A run refuses to send
   * from anywhere else: after the VM moved, the job's source holds a stale
   * copy, and its target is where the VM now writes.
   */
  readonly ownerNode?: DatasetOwner;
  /** Where each run's outcome, and a job following its VM, are told (default: nowhere). */
  readonly events?: EventSink;
}
/** Runs replication jobs, at most one run per job across every daemon sharing the store. */
export interface ReplicationRunner {
  /**
   * Runs a job now: takes its run lock in the store (REPLICATION_RUNNING when
   * another run holds it), replicates, records the outcome and releases the
   * lock. A failed run resolves too, with state FAILED and the error. With
   * `onlyIfDue`, a job that is not due or is running is skipped (undefined).
   */
  run(
    jobId: string,
    options?: { onlyIfDue?: boolean },
  ): Promise<ReplicationStatusRecord | undefined>;
}

/** Creates a {@link ReplicationRunner}. */
export function createReplicationRunner(options: ReplicationRunnerOptions): ReplicationRunner {
  const { store, jobs, storage, clock } = options;
  const log = options.logger.child({ component: "replication" });
  const holder = options.holder ?? `rpcd-${globalThis.crypto.randomUUID().slice(0, 8)}`;
  const lockTtlMs = options.lockTtlMs ?? 30_000;
  const retryBaseMs = options.retryBaseMs ?? 60_000;
  const retryMaxMs = options.retryMaxMs ?? 3_600_000;
  const progressIntervalMs = options.progressIntervalMs ?? 1000;
  const closing = options.closing ?? new AbortController().signal;
  /** The job's tenant is left to the recorder: it knows datasets' owners. */
  const tell = (jobId: string, type: string, message: string, reason?: string) =>
    options.events?.emit({
      kind: "replication",
      id: jobId,
      type,
      message,
      reason,
      warning: type === "ReplicationFailed",
      source: "replication",
    });
  const runLock = createReplicationRunLock({ store, clock, holder, lockTtlMs });
  const follower = createReplicationFollower({ jobs, log, ownerNode: options.ownerNode });
  const outcomes = createReplicationOutcome({ clock, log, tell, retryBaseMs, retryMaxMs });

  return {
    async run(jobId, runOptions = {}) {
      let lock: HeldRunLock | undefined;
      let stored: StoredJob | undefined;
      for (let attempt = 0; attempt < 4 && lock === undefined; attempt++) {
        stored = await jobs.get(jobId);
        if (stored === undefined) {
          if (runOptions.onlyIfDue) return undefined;
          throw new RpcError("REPLICATION_JOB_NOT_FOUND");
        }
        const due = Number(stored.status.nextRunAtMs) <= clock.now();
        if (runOptions.onlyIfDue && (!due || stored.lock !== undefined)) return undefined;
        if (stored.lock !== undefined) throw new RpcError("REPLICATION_RUNNING");
        lock = await runLock.acquire(stored);
      }
      if (lock === undefined || stored === undefined) {
        if (runOptions.onlyIfDue) return undefined;
        throw new RpcError("REPLICATION_RUNNING");
      }
      const { lease, lockRevision } = lock;
      const started = clock.now();
      const lost = new AbortController();
      const signal = AbortSignal.any([closing, lost.signal]);
      const renew = keepRunLockAlive(lease, lockTtlMs, lost, jobId, log);

      let status = lock.status;
      let writing: Promise<unknown> = Promise.resolve();
      let lastWrite = started;
      const progress = (patch: Partial<ReplicationStatusRecord>, force = false) => {
        status = create(ReplicationStatusRecordSchema, {
          ...status,
          ...patch,
          updatedAtMs: big(clock.now()),
        });
        if (!force && clock.now() - lastWrite < progressIntervalMs) return writing;
        lastWrite = clock.now();
        const snapshot = status;
        writing = writing
          .then(() => runLock.writeStatus(jobId, lockRevision, snapshot, false))
          .catch((err: unknown) => log.warn({ err, jobId }, "replication progress not recorded"));
        return writing;
      };

      let outcome: ReplicationStatusRecord | undefined;
      let job = stored.job;
      try {
        outcome = await follower
          .followVm(stored, signal)
          .then((followed) => {
            if (followed !== undefined) {
              tell(jobId, "ReplicationFollowed", followed.note);
              job = followed.job;
              status = create(ReplicationStatusRecordSchema, {
                ...status,
                followed: followed.note,
                followedAtMs: big(clock.now()),
              });
            }
            return replicate(job, storage, signal, clock, progress, log, options.ownerNode);
          })
          .then(
            (done) => outcomes.succeeded(jobId, job, status, started, done),
            (err: unknown) => outcomes.failed(jobId, job, status, started, err),
          );
      } finally {
        clearInterval(renew);
        await writing;
        try {
          if (
            outcome !== undefined &&
            !(await runLock.writeStatus(jobId, lockRevision, outcome, true))
          )
            log.error({ jobId }, "replication run lost its lock; its outcome was not recorded");
          else if (outcome?.state === ReplicationState.REPL_STATE_SUCCESS) {
            // This job's own base now protects the pair: a retired one may go.
            await store
              .delete(retiredKey(job.plan?.dataset, job.plan?.target?.nodeId?.id ?? ""))
              .catch((err: unknown) => log.warn({ err, jobId }, "retired base not released"));
          }
        } finally {
          // Revoking the lease also drops the lock, whatever happened above.
          await lease.revoke().catch(() => {});
        }
      }
      return outcome;
    },
  };
}
