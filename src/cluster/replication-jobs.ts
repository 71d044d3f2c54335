/**
 * Replication jobs in the store: their contract ({@link ReplicationJobs})
 * and `createReplicationJobs`, which composes it from its parts: the keys
 * (replication-job-keys.ts), the reads and the status watch
 * (replication-job-reads.ts), creation and deletion
 * (replication-job-writes.ts) and the re-pointing after a moved VM
 * (replication-job-repoint.ts).
 */
import type {
  ReplicationJobRecord,
  ReplicationLockRecord,
  ReplicationStatusRecord,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { KvStore } from "../store/index.js";
import { createReplicationJobReads } from "./replication-job-reads.js";
import { createReplicationJobRepoint } from "./replication-job-repoint.js";
import { createReplicationJobWrites } from "./replication-job-writes.js";

export {
  JOBS_PREFIX,
  jobKeys,
  LOCKS_PREFIX,
  RETIRED_PREFIX,
  retiredKey,
  STATUS_PREFIX,
  TARGETS_PREFIX,
  targetKey,
} from "./replication-job-keys.js";

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

/** Creates the store-backed {@link ReplicationJobs}. */
export function createReplicationJobs(store: KvStore): ReplicationJobs {
  const reads = createReplicationJobReads(store);
  return {
    ...reads,
    ...createReplicationJobWrites(store, reads.get),
    ...createReplicationJobRepoint(store),
  };
}
