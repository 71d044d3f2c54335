/**
 * The reads of replication jobs in the store: one job with its status and
 * run lock, every job, the job sending a dataset to a node, the bases
 * deleted jobs left, and the watch of every job's status. Part of
 * `createReplicationJobs` (replication-jobs.ts).
 */
import { create } from "@bufbuild/protobuf";
import { datasetKey } from "../drivers/index.js";
import {
  ReplicationJobRecordSchema,
  type ReplicationLockRecord,
  ReplicationLockRecordSchema,
  ReplicationStatusRecordSchema,
  ReplicationTargetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  decodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import {
  JOBS_PREFIX,
  jobKeys,
  LOCKS_PREFIX,
  RETIRED_PREFIX,
  STATUS_PREFIX,
  targetKey,
} from "./replication-job-keys.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";

/** The reading half of {@link ReplicationJobs}. */
export type ReplicationJobReads = Pick<
  ReplicationJobs,
  "get" | "list" | "retiredBases" | "forTarget" | "watch"
>;

/** Creates the store-backed reads of `createReplicationJobs`. */
export function createReplicationJobReads(store: KvStore): ReplicationJobReads {
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
