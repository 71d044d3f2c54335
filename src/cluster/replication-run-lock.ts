/**
 * A replication job's run lock: a key on a lease in the store, taken with
 * the job marked RUNNING in one transaction, renewed while the run lasts,
 * and guarding every status write of the run (a run that lost its lock
 * writes nothing).
 */
import { create } from "@bufbuild/protobuf";
import type { Clock, Logger } from "../core/index.js";
import {
  ReplicationLockRecordSchema,
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { ReplicationState } from "../gen/debvisor/v1/storage_pb.js";
import { encodeMessage, type KvStore, type Lease } from "../store/index.js";
import { jobKeys, type StoredJob } from "./replication-jobs.js";

/** A time or byte count as a stored uint64/int64. */
export const big = (n: number) => BigInt(Math.round(n));

/** A run lock held: its lease, the revision that wrote it, and the RUNNING status written with it. */
export interface HeldRunLock {
  readonly lease: Lease;
  readonly lockRevision: number;
  readonly status: ReplicationStatusRecord;
}

/** What {@link createReplicationRunLock} works with. */
export interface ReplicationRunLockDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** This daemon's name in run locks. */
  readonly holder: string;
  /** Lease of a run lock. */
  readonly lockTtlMs: number;
}

/** Takes run locks and writes a run's status under its lock. */
export interface ReplicationRunLock {
  /** Takes the run lock and marks the job RUNNING in one txn; undefined when someone else has it. */
  acquire(stored: StoredJob): Promise<HeldRunLock | undefined>;
  /** Writes the status only while this run still holds the lock (and optionally releases it). */
  writeStatus(
    jobId: string,
    lockRevision: number,
    status: ReplicationStatusRecord,
    release: boolean,
  ): Promise<boolean>;
}

/** Creates a {@link ReplicationRunLock}. */
export function createReplicationRunLock(deps: ReplicationRunLockDeps): ReplicationRunLock {
  const { store, clock, holder, lockTtlMs } = deps;
  return {
    async acquire(stored) {
      const keys = jobKeys(stored.job.jobId);
      const now = clock.now();
      const status = create(ReplicationStatusRecordSchema, {
        ...stored.status,
        state: ReplicationState.REPL_STATE_RUNNING,
        runningOn: holder,
        startedAtMs: big(now),
        updatedAtMs: big(now),
        bytesTransferred: 0n,
        bytesExpected: 0n,
        durationMs: 0n,
      });
      const lease = await store.grantLease(lockTtlMs);
      const txn = await store.txn({
        compares: [
          { key: keys.job, modRevision: stored.jobRevision },
          { key: keys.status, modRevision: stored.statusRevision },
          { key: keys.lock, modRevision: 0 },
        ],
        success: [
          {
            type: "put",
            key: keys.lock,
            value: encodeMessage(ReplicationLockRecordSchema, {
              jobId: stored.job.jobId,
              holder,
              acquiredAtMs: big(now),
            }),
            lease: lease.id,
          },
          {
            type: "put",
            key: keys.status,
            value: encodeMessage(ReplicationStatusRecordSchema, status),
          },
        ],
      });
      if (txn.succeeded) return { lease, lockRevision: txn.revision, status };
      await lease.revoke().catch(() => {});
      return undefined;
    },

    async writeStatus(jobId, lockRevision, status, release) {
      const keys = jobKeys(jobId);
      const txn = await store.txn({
        compares: [{ key: keys.lock, modRevision: lockRevision }],
        success: [
          {
            type: "put",
            key: keys.status,
            value: encodeMessage(ReplicationStatusRecordSchema, status),
          },
          ...(release ? [{ type: "delete" as const, key: keys.lock }] : []),
        ],
      });
      return txn.succeeded;
    },
  };
}

/**
 * Renews a run's lease every third of its TTL until the returned timer is
 * cleared; aborts `lost` when a renewal fails or none succeeded in time.
 */
export function keepRunLockAlive(
  lease: Lease,
  lockTtlMs: number,
  lost: AbortController,
  jobId: string,
  log: Logger,
): ReturnType<typeof setInterval> {
  // A keepAlive that hangs (a partitioned store) must stop the run too:
  // past most of the TTL without a renewal, another daemon may hold the lock.
  let renewedAt = performance.now();
  const renew = setInterval(
    () => {
      if (performance.now() - renewedAt > lockTtlMs * 0.8) {
        log.error({ jobId }, "replication run could not renew its lock in time; stopping it");
        lost.abort();
        return;
      }
      lease.keepAlive().then(
        () => {
          renewedAt = performance.now();
        },
        (err: unknown) => {
          log.error({ err, jobId }, "replication run lost its lock; stopping it");
          lost.abort();
        },
      );
    },
    Math.max(100, Math.floor(lockTtlMs / 3)),
  );
  renew.unref();
  return renew;
}
