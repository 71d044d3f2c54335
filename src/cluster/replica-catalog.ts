import { datasetKey } from "../drivers/index.js";
import { ReplicationTargetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";
import { createReplicationJobs, TARGETS_PREFIX } from "./replication-jobs.js";

/** A node holding a replicated copy of a ZFS dataset. */
export interface ReplicaInfo {
  readonly nodeId: string;
  readonly jobId: string;
  /** The newest snapshot the copy holds (the last one sent). */
  readonly lastSnapshotName: string;
  /** When that snapshot arrived, epoch ms. */
  readonly lastSuccessAtMs: number;
}

/**
 * Which nodes hold a copy of a ZFS dataset, from the replication jobs in the
 * store: a node holds one once a job sending the dataset there has succeeded
 * at least once. Migration planning asks it whether a ZFS VM can move.
 */
export interface ReplicaCatalog {
  /** True when a replication job of `dataset` to `nodeId` has completed at least one successful run. */
  hasReplica(dataset: DatasetRef, nodeId: string, signal?: AbortSignal): Promise<boolean>;
  /** Every node with such a copy, sorted by node id. */
  replicasOf(dataset: DatasetRef, signal?: AbortSignal): Promise<ReplicaInfo[]>;
}

/** Creates a {@link ReplicaCatalog} over the replication jobs kept in `store`. */
export function createReplicaCatalog(options: { readonly store: KvStore }): ReplicaCatalog {
  const jobs = createReplicationJobs(options.store);
  const catalog: ReplicaCatalog = {
    async hasReplica(dataset, nodeId, signal) {
      const job = await jobs.forTarget(dataset, nodeId, signal);
      return job !== undefined && job.status.successfulRuns > 0n;
    },
    async replicasOf(dataset, signal) {
      const prefix = `${TARGETS_PREFIX}${datasetKey(dataset)}|`;
      const out: ReplicaInfo[] = [];
      for await (const kv of rangeAll(options.store, prefix, { signal })) {
        const job = await jobs.get(decodeMessage(ReplicationTargetRecordSchema, kv).jobId, signal);
        if (job === undefined || job.status.successfulRuns === 0n) continue;
        out.push({
          nodeId: kv.key.slice(prefix.length),
          jobId: job.job.jobId,
          lastSnapshotName: job.status.lastSnapshotName,
          lastSuccessAtMs: Number(job.status.lastSuccessAtMs),
        });
      }
      return out;
    },
  };
  return catalog;
}
