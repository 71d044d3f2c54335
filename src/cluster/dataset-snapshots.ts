/**
 * A dataset's snapshots as the StorageService handlers see them: the
 * driver as a snapshotter, the names replication jobs still need, the
 * listing marked with them, and taking a snapshot named from a label.
 * Shared by the snapshot, prune and RBD template handlers.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, invalid, RpcError } from "../core/index.js";
import {
  canSnapshot,
  checkLabel,
  datasetKey,
  type SnapshotDriver,
  type StorageDriver,
  snapshotSpec,
  stampedSnapshotName,
} from "../drivers/index.js";
import {
  type DatasetRef,
  type SnapshotInfo,
  SnapshotInfoSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import type { ReplicationJobs } from "./replication-jobs.js";

/** What {@link createDatasetSnapshots} works with. */
export interface DatasetSnapshotsDeps {
  readonly storage: StorageDriver;
  readonly clock: Clock;
  readonly jobs: ReplicationJobs;
}

/** Reads and takes a dataset's snapshots for the handlers. */
export interface DatasetSnapshots {
  /** The driver as a snapshotter; STORAGE_UNSUPPORTED when it cannot take snapshots. */
  snapshotter(): SnapshotDriver;
  /** The snapshot names replication jobs of the dataset still need: their incremental bases and what they are sending now. */
  replicationBases(dataset: DatasetRef, signal: AbortSignal): Promise<Set<string>>;
  /** The dataset's snapshots, oldest first, marked with replication bases; DATASET_NOT_FOUND when missing. */
  snapshotsOf(
    dataset: DatasetRef,
    nodeId: string | undefined,
    signal: AbortSignal,
  ): Promise<SnapshotInfo[]>;
  /** Takes a snapshot named from `label` and the current UTC second. */
  take(
    dataset: DatasetRef,
    label: string,
    nodeId: string | undefined,
    signal: AbortSignal,
  ): Promise<SnapshotInfo>;
}

/** Creates the {@link DatasetSnapshots}. */
export function createDatasetSnapshots(deps: DatasetSnapshotsDeps): DatasetSnapshots {
  const { storage, clock, jobs } = deps;

  const snapshotter = () => {
    if (!canSnapshot(storage)) throw new RpcError("STORAGE_UNSUPPORTED");
    return storage;
  };
  /** The snapshot names replication jobs of the dataset still need: their incremental bases and what they are sending now. */
  const replicationBases = async (dataset: DatasetRef, signal: AbortSignal) => {
    const key = datasetKey(dataset);
    return new Set(
      [
        ...(await jobs.list(signal))
          .filter(
            (j) => j.job.plan?.dataset !== undefined && datasetKey(j.job.plan.dataset) === key,
          )
          .flatMap((j) => [j.status.lastSnapshotName, j.status.sendingSnapshotName]),
        ...(await jobs.retiredBases(dataset, signal)),
      ].filter((name) => name !== ""),
    );
  };
  /** The dataset's snapshots, oldest first, marked with replication bases; DATASET_NOT_FOUND when missing. */
  const snapshotsOf = async (
    dataset: DatasetRef,
    nodeId: string | undefined,
    signal: AbortSignal,
  ) => {
    const snaps = await storage.listSnapshots(dataset, signal, nodeId);
    if (snaps === undefined) throw new RpcError("DATASET_NOT_FOUND");
    const bases = await replicationBases(dataset, signal);
    return snaps
      .map((s) =>
        create(SnapshotInfoSchema, { ...s, replicationBase: bases.has(s.ref?.snapshotName ?? "") }),
      )
      .sort((a, b) => (orderKey(a) < orderKey(b) ? -1 : orderKey(a) > orderKey(b) ? 1 : 0));
  };
  /** Takes a snapshot named from `label` and the current UTC second. */
  const take = async (
    dataset: DatasetRef,
    label: string,
    nodeId: string | undefined,
    signal: AbortSignal,
  ) => {
    checkLabel(label);
    const name = stampedSnapshotName(label, clock.now());
    snapshotSpec(dataset, name, "label");
    return snapshotter().createSnapshot({ dataset, name, nodeId }, signal);
  };

  return { snapshotter, replicationBases, snapshotsOf, take };
}

/** Sort and page key: creation time, then name. */
export function orderKey(s: SnapshotInfo): string {
  return `${String(s.created?.seconds ?? 0n).padStart(20, "0")}|${s.ref?.snapshotName ?? ""}`;
}

/** A message field the validation stage already requires; a TypeError-free guard for plain callers. */
export function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw invalid(`${field}: required`);
  return value;
}
