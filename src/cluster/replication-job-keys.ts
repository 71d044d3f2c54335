/**
 * Where replication jobs' records live in the store: the key prefixes and
 * the keys of one job, of the job sending a dataset to a node, and of the
 * base a deleted job left behind. Shared by the job records' parts;
 * replication-jobs.ts re-exports them for the run lock, the runner and the
 * replica catalog.
 */
import { datasetKey } from "../drivers/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";

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
