import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  formatBytes,
  type Logger,
  RpcError,
  sameNode,
  throwIfAborted,
  toRpcError,
} from "../core/index.js";
import {
  canReplicate,
  labelOf,
  nextStampedName,
  type StorageDriver,
  type ZfsReplicationDriver,
} from "../drivers/index.js";
import {
  type ReplicationJobRecord,
  ReplicationLockRecordSchema,
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { type DatasetRef, ReplicationState } from "../gen/debvisor/v1/storage_pb.js";
import { encodeMessage, type KvStore, type Lease } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { jobKeys, type ReplicationJobs, retiredKey, type StoredJob } from "./replication-jobs.js";

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
  readonly ownerNode?: (dataset: DatasetRef, signal: AbortSignal) => Promise<string | undefined>;
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

/** A time or byte count as a stored uint64/int64. */
const big = (n: number) => BigInt(Math.round(n));

/**
 * The label of the snapshots a job makes: `repl-<job id>`; for a tenant's
 * job (`<tenant>:<id>`), `repl-t<8 hex of the tenant's hash>-<id>`, since a
 * label holds no ':' and a tenant's name may hold anything.
 */
export function replicationLabel(jobId: string): string {
  const at = jobId.lastIndexOf(":");
  if (at < 0) return `repl-${jobId}`;
  const tenant = createHash("sha256").update(jobId.slice(0, at)).digest("hex").slice(0, 8);
  return `repl-t${tenant}-${jobId.slice(at + 1)}`;
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

  /** Takes the run lock and marks the job RUNNING in one txn; undefined when someone else has it. */
  async function acquire(
    stored: StoredJob,
  ): Promise<{ lease: Lease; lockRevision: number; status: ReplicationStatusRecord } | undefined> {
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
  }

  /** Writes the status only while this run still holds the lock (and optionally releases it). */
  async function writeStatus(
    jobId: string,
    lockRevision: number,
    status: ReplicationStatusRecord,
    release: boolean,
  ): Promise<boolean> {
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
  }

  /**
   * When the job's dataset now belongs to a VM on another node (a migration
   * or failover moved it), re-points the job there: from the VM's node to the
   * job's target, or, when the VM moved to the target itself, the other way
   * round (the next send is incremental from the snapshot both hold). Returns
   * the re-pointed job and a note saying what changed; undefined when
   * nothing had to.
   */
  async function followVm(
    stored: StoredJob,
    signal: AbortSignal,
  ): Promise<{ job: ReplicationJobRecord; note: string } | undefined> {
    const plan = stored.job.plan;
    const dataset = plan?.dataset;
    const source = plan?.source?.nodeId?.id ?? "";
    const target = plan?.target?.nodeId?.id ?? "";
    if (dataset === undefined) return undefined;
    const owner = await options.ownerNode?.(dataset, signal);
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
  }

  return {
    async run(jobId, runOptions = {}) {
      let lock: Awaited<ReturnType<typeof acquire>>;
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
        lock = await acquire(stored);
      }
      if (lock === undefined || stored === undefined) {
        if (runOptions.onlyIfDue) return undefined;
        throw new RpcError("REPLICATION_RUNNING");
      }
      const { lease, lockRevision } = lock;
      const started = clock.now();
      const lost = new AbortController();
      const signal = AbortSignal.any([closing, lost.signal]);
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
          .then(() => writeStatus(jobId, lockRevision, snapshot, false))
          .catch((err: unknown) => log.warn({ err, jobId }, "replication progress not recorded"));
        return writing;
      };

      let outcome: ReplicationStatusRecord | undefined;
      let job = stored.job;
      try {
        outcome = await followVm(stored, signal)
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
            (done) => {
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
            (err: unknown) => {
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
          );
      } finally {
        clearInterval(renew);
        await writing;
        try {
          if (outcome !== undefined && !(await writeStatus(jobId, lockRevision, outcome, true)))
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

/** One run: snapshot the source, send it (incremental from the newest common snapshot), prune. */
async function replicate(
  job: ReplicationJobRecord,
  storage: StorageDriver,
  signal: AbortSignal,
  clock: Clock,
  progress: (patch: Partial<ReplicationStatusRecord>, force?: boolean) => Promise<unknown>,
  log: Logger,
  ownerNode?: ReplicationRunnerOptions["ownerNode"],
): Promise<{ snapshot: string; bytes: number; base: string | undefined }> {
  const plan = job.plan;
  const dataset = plan?.dataset;
  const source = plan?.source?.nodeId?.id ?? "";
  const target = plan?.target?.nodeId?.id ?? "";
  if (dataset === undefined)
    throw new RpcError("INTERNAL", { cause: new Error(`job ${job.jobId} has no dataset`) });
  if (!canReplicate(storage)) throw new RpcError("STORAGE_UNSUPPORTED");
  const owner = await ownerNode?.(dataset, signal);
  if (owner !== undefined && !sameNode(owner, source))
    throw new RpcError("REPLICATION_SOURCE_MOVED", {
      message: `the dataset's vm now runs on ${owner}, not on the job's source ${source}; plan the job again from ${owner}`,
    });
  const onSource = await storage.listSnapshots(dataset, signal, source);
  if (onSource === undefined) throw new RpcError("DATASET_NOT_FOUND");
  const onTarget = await storage.listSnapshots(dataset, signal, target);
  const targetNames = new Set(onTarget?.map((s) => s.ref?.snapshotName));
  const base = [...onSource].reverse().find((s) => targetNames.has(s.ref?.snapshotName))
    ?.ref?.snapshotName;
  if (onTarget !== undefined && base === undefined)
    throw new RpcError("REPLICATION_DIVERGED", {
      message:
        "the target node holds the dataset with no snapshot in common; remove it there first",
    });
  const label = replicationLabel(job.jobId);
  // Names go to the second: a run within the same second as the last one (a manual run just
  // after a scheduled one) takes the next second's name rather than failing SNAPSHOT_EXISTS,
  // after every name of the job on either node (one pruning freed is not taken again).
  const snapshot = nextStampedName(
    label,
    clock.now(),
    [...onSource, ...(onTarget ?? [])].map((s) => s.ref?.snapshotName ?? ""),
  );
  // Recorded before it exists, so no prune or delete can take it mid-send.
  await progress(
    {
      incremental: base !== undefined,
      baseSnapshotName: base ?? "",
      sendingSnapshotName: snapshot,
    },
    true,
  );
  await storage.createSnapshot({ dataset, name: snapshot, nodeId: source }, signal);
  let bytes: number;
  try {
    ({ bytes } = await storage.sendSnapshot({
      dataset,
      fromNode: source,
      toNode: target,
      snapshot,
      base,
      bandwidthLimit: Number(job.bandwidthLimitBytesPerSecond),
      jobId: job.jobId,
      signal,
      onProgress: (moved, expected) =>
        progress({ bytesTransferred: big(moved), bytesExpected: big(expected) }),
    }));
  } catch (err) {
    // The snapshot was never received: drop it so failed runs leave nothing behind.
    await storage
      .deleteSnapshot({ dataset, name: snapshot, nodeId: source }, new AbortController().signal)
      .catch((e: unknown) =>
        log.warn({ err: e, jobId: job.jobId, snapshot }, "could not remove the unsent snapshot"),
      );
    throw err;
  }
  // Pruning deletes: only while this run still holds its lock.
  throwIfAborted(signal);
  for (const node of [source, target])
    await pruneReplicationSnapshots(
      storage,
      dataset,
      node,
      label,
      job.keepSnapshots,
      snapshot,
      signal,
      log,
    );
  return { snapshot, bytes, base };
}

/** Deletes a job's oldest snapshots on one node beyond `keep`; never the newest. Best effort. */
async function pruneReplicationSnapshots(
  storage: ZfsReplicationDriver,
  dataset: DatasetRef,
  nodeId: string,
  label: string,
  keep: number,
  newest: string,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  try {
    const mine = ((await storage.listSnapshots(dataset, signal, nodeId)) ?? [])
      .map((s) => s.ref?.snapshotName ?? "")
      .filter((name) => labelOf(name) === label && name !== newest);
    for (const name of mine.slice(0, Math.max(0, mine.length - (Math.max(1, keep) - 1))))
      await storage
        .deleteSnapshot({ dataset, name, nodeId }, signal)
        .catch((err: unknown) =>
          log.warn({ err, nodeId, snapshot: name }, "old replication snapshot not removed"),
        );
  } catch (err) {
    log.warn({ err, nodeId }, "old replication snapshots not pruned");
  }
}
