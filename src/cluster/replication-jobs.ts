import { create, equals } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import {
  type ReplicationJobRecord,
  ReplicationJobRecordSchema,
  type ReplicationLockRecord,
  ReplicationLockRecordSchema,
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
  ReplicationTargetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { NodeRefSchema } from "../gen/debvisor/v1/migration_pb.js";
import {
  type DatasetRef,
  ReplicationState,
  ZfsReplicationPlanSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  rangeAll,
} from "../store/index.js";

/** Where a job's records live in the store. */
export const JOBS_PREFIX = "replication/jobs/";
export const STATUS_PREFIX = "replication/status/";
export const LOCKS_PREFIX = "replication/locks/";
export const TARGETS_PREFIX = "replication/targets/";
/**
 * The last snapshot a deleted job sent to a node, under
 * replication/retired/<dataset key>|<node>: still the common base a new job
 * for the same pair needs, so it stays protected until such a job succeeds.
 */
export const RETIRED_PREFIX = "replication/retired/";

/** The key of the snapshot a deleted job left as the common base of `dataset` on `nodeId`. */
export function retiredKey(dataset: DatasetRef | undefined, nodeId: string): string {
  return `${RETIRED_PREFIX}${dataset === undefined ? "" : datasetKey(dataset)}|${nodeId}`;
}

/** The store keys of one job. */
export function jobKeys(jobId: string) {
  return {
    job: JOBS_PREFIX + jobId,
    status: STATUS_PREFIX + jobId,
    lock: LOCKS_PREFIX + jobId,
  };
}

/** The key naming the job that replicates `dataset` to `nodeId` (one per pair). */
export function targetKey(dataset: DatasetRef | undefined, nodeId: string): string {
  return `${TARGETS_PREFIX}${dataset === undefined ? "" : datasetKey(dataset)}|${nodeId}`;
}

/** A job as stored, with its status, the revisions to compare on, and its run lock if held. */
export interface StoredJob {
  readonly job: ReplicationJobRecord;
  readonly jobRevision: number;
  readonly status: ReplicationStatusRecord;
  readonly statusRevision: number;
  readonly lock: ReplicationLockRecord | undefined;
}

/** A status change seen by {@link ReplicationJobs.watch}; `status` undefined: the job was deleted. */
export interface StatusChange {
  readonly jobId: string;
  readonly status: ReplicationStatusRecord | undefined;
}

/** Replication jobs in the store: shared by every daemon on that store. */
export interface ReplicationJobs {
  /**
   * Stores a new job with a PENDING status due at `nowMs`. The same id with
   * the same plan returns the existing job (`created` false); another plan
   * under that id, or another job replicating the dataset to the same node,
   * is REPLICATION_JOB_EXISTS.
   */
  create(
    job: ReplicationJobRecord,
    nowMs: number,
    signal?: AbortSignal,
  ): Promise<{ job: StoredJob; created: boolean }>;
  get(jobId: string, signal?: AbortSignal): Promise<StoredJob | undefined>;
  /** Every job, sorted by id. */
  list(signal?: AbortSignal): Promise<StoredJob[]>;
  /** Deletes a job that is not running (REPLICATION_RUNNING otherwise); the replicated data stays. */
  delete(jobId: string, signal?: AbortSignal): Promise<StoredJob>;
  /** Snapshot names deleted jobs left as common bases of `dataset` (any target node). */
  retiredBases(dataset: DatasetRef, signal?: AbortSignal): Promise<string[]>;
  /** The job replicating `dataset` to `nodeId`, if any. */
  forTarget(
    dataset: DatasetRef,
    nodeId: string,
    signal?: AbortSignal,
  ): Promise<StoredJob | undefined>;
  /** The current status of every job, then every change, until `signal` aborts. */
  watch(signal: AbortSignal): AsyncIterable<StatusChange>;
  /**
   * Re-points a job at new source and target nodes (its dataset's VM moved),
   * moving its target key, while the job record is still at `jobRevision`.
   * Returns the new revision, or undefined when the record changed or
   * another job already sends the dataset to the new target.
   */
  repoint(
    stored: StoredJob,
    source: string,
    target: string,
    signal?: AbortSignal,
  ): Promise<{ job: ReplicationJobRecord; jobRevision: number } | undefined>;
}

/** Compare-and-swap attempts before giving up with CONFLICT. */
const MAX_ATTEMPTS = 8;

/** Creates the store-backed {@link ReplicationJobs}. */
export function createReplicationJobs(store: KvStore): ReplicationJobs {
  async function get(jobId: string, signal?: AbortSignal): Promise<StoredJob | undefined> {
    const keys = jobKeys(jobId);
    const job = await getMessage(store, ReplicationJobRecordSchema, keys.job, { signal });
    if (job === undefined) return undefined;
    const status = await getMessage(store, ReplicationStatusRecordSchema, keys.status, { signal });
    const lock = await getMessage(store, ReplicationLockRecordSchema, keys.lock, { signal });
    return {
      job: job.message,
      jobRevision: job.modRevision,
      status: status?.message ?? create(ReplicationStatusRecordSchema, { jobId }),
      statusRevision: status?.modRevision ?? 0,
      lock: lock?.message,
    };
  }

  return {
    get,
    async create(job, nowMs, signal) {
      const keys = jobKeys(job.jobId);
      const target = targetKey(job.plan?.dataset, job.plan?.target?.nodeId?.id ?? "");
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
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
        if (txn.succeeded) {
          const stored = await get(job.jobId, signal);
          if (stored !== undefined) return { job: stored, created: true };
          continue;
        }
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
      }
      throw new RpcError("CONFLICT");
    },
    async list(signal) {
      const statuses = new Map<string, KeyValue>();
      for await (const kv of rangeAll(store, STATUS_PREFIX, { signal }))
        statuses.set(kv.key.slice(STATUS_PREFIX.length), kv);
      const locks = new Map<string, ReplicationLockRecord>();
      for await (const kv of rangeAll(store, LOCKS_PREFIX, { signal }))
        locks.set(
          kv.key.slice(LOCKS_PREFIX.length),
          decodeMessage(ReplicationLockRecordSchema, kv),
        );
      const out: StoredJob[] = [];
      for await (const kv of rangeAll(store, JOBS_PREFIX, { signal })) {
        const jobId = kv.key.slice(JOBS_PREFIX.length);
        const status = statuses.get(jobId);
        out.push({
          job: decodeMessage(ReplicationJobRecordSchema, kv),
          jobRevision: kv.modRevision,
          status:
            status === undefined
              ? create(ReplicationStatusRecordSchema, { jobId })
              : decodeMessage(ReplicationStatusRecordSchema, status),
          statusRevision: status?.modRevision ?? 0,
          lock: locks.get(jobId),
        });
      }
      return out;
    },
    async delete(jobId, signal) {
      const keys = jobKeys(jobId);
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
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
        if (txn.succeeded) return existing;
      }
      throw new RpcError("CONFLICT");
    },
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
    async retiredBases(dataset, signal) {
      const out: string[] = [];
      for await (const kv of rangeAll(store, `${RETIRED_PREFIX}${datasetKey(dataset)}|`, {
        signal,
      }))
        out.push(new TextDecoder().decode(kv.value));
      return out;
    },
    async forTarget(dataset, nodeId, signal) {
      const kv = await store.get(targetKey(dataset, nodeId), { signal });
      if (kv === undefined) return undefined;
      return get(decodeMessage(ReplicationTargetRecordSchema, kv).jobId, signal);
    },
    async *watch(signal) {
      const first = await store.range(STATUS_PREFIX, { limit: 1, signal });
      // Everything written after the first page was read is seen again by the watch: nothing is missed.
      for await (const kv of rangeAll(store, STATUS_PREFIX, { signal }))
        yield {
          jobId: kv.key.slice(STATUS_PREFIX.length),
          status: decodeMessage(ReplicationStatusRecordSchema, kv),
        };
      for await (const e of store.watch(STATUS_PREFIX, first.revision + 1, { signal })) {
        const jobId = e.key.slice(STATUS_PREFIX.length);
        yield {
          jobId,
          status:
            e.type === "delete"
              ? undefined
              : decodeMessage(ReplicationStatusRecordSchema, {
                  key: e.key,
                  value: e.value,
                  createRevision: e.revision,
                  modRevision: e.revision,
                  version: 0,
                  lease: undefined,
                }),
        };
      }
    },
  };
}
