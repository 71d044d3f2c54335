/**
 * One replication run's work: snapshot the job's source, send it to the
 * target (incremental from the newest snapshot both hold), prune the job's
 * old snapshots on both nodes. Also the label the job's snapshots carry.
 */
import { createHash } from "node:crypto";
import { type Clock, type Logger, RpcError, sameNode, throwIfAborted } from "../core/index.js";
import {
  canReplicate,
  labelOf,
  nextStampedName,
  type StorageDriver,
  type ZfsReplicationDriver,
} from "../drivers/index.js";
import type {
  ReplicationJobRecord,
  ReplicationStatusRecord,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import { big } from "./replication-run-lock.js";

/** What one run sent: the new snapshot, its size, the base of an incremental send. */
export interface Replicated {
  readonly snapshot: string;
  readonly bytes: number;
  readonly base: string | undefined;
}

/** The node the VM owning a dataset runs on, if known. */
export type DatasetOwner = (
  dataset: DatasetRef,
  signal: AbortSignal,
) => Promise<string | undefined>;

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

/** One run: snapshot the source, send it (incremental from the newest common snapshot), prune. */
export async function replicate(
  job: ReplicationJobRecord,
  storage: StorageDriver,
  signal: AbortSignal,
  clock: Clock,
  progress: (patch: Partial<ReplicationStatusRecord>, force?: boolean) => Promise<unknown>,
  log: Logger,
  ownerNode?: DatasetOwner,
): Promise<Replicated> {
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
    // The snapshot was never received: drop it so failed runs leave nothing behind. Bounded:
    // a hung delete would keep the run, and its lock renewal, going for good.
    await storage
      .deleteSnapshot({ dataset, name: snapshot, nodeId: source }, AbortSignal.timeout(30_000))
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
