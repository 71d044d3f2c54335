import type { Readable } from "node:stream";
import {
  type DatasetRef,
  type SnapshotInfo,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";

/**
 * What the control plane asks of every storage backend (ZFS, Ceph RBD,
 * simulation). Optional abilities are separate interfaces below, found with
 * their type guards.
 *
 * ZFS datasets live on one node each, and replication makes copies on other
 * nodes: `nodeId` picks the copy (default: where the backend keeps the
 * dataset itself). RBD images live in the Ceph cluster and ignore `nodeId`.
 */
export interface StorageDriver {
  /** Snapshots of one dataset, oldest first; undefined when the dataset does not exist. */
  listSnapshots(
    dataset: DatasetRef,
    signal: AbortSignal,
    nodeId?: string,
  ): Promise<SnapshotInfo[] | undefined>;
}

/** A snapshot of a dataset, on one node's copy for ZFS. */
export interface SnapshotTarget {
  readonly dataset: DatasetRef;
  /** The part after `@`. */
  readonly name: string;
  readonly nodeId?: string;
}

/** Taking and deleting snapshots. */
export interface SnapshotDriver extends StorageDriver {
  /** Takes a snapshot; SNAPSHOT_EXISTS when the name is taken, DATASET_NOT_FOUND when the dataset is missing. */
  createSnapshot(target: SnapshotTarget, signal: AbortSignal): Promise<SnapshotInfo>;
  /**
   * Deletes a snapshot. SNAPSHOT_NOT_FOUND when missing, SNAPSHOT_HELD for a
   * ZFS hold or a busy snapshot, SNAPSHOT_HAS_CLONES while clones depend on
   * it. A protected RBD snapshot without clones is unprotected first.
   */
  deleteSnapshot(target: SnapshotTarget, signal: AbortSignal): Promise<void>;
}

/** One ZFS send/receive of a snapshot from one node's copy to another's. */
export interface SendOptions {
  readonly dataset: DatasetRef;
  readonly fromNode: string;
  readonly toNode: string;
  /** The snapshot to send (it exists on `fromNode`). */
  readonly snapshot: string;
  /** Incremental from this snapshot, which both sides hold; full send when undefined. */
  readonly base?: string;
  /** Bytes per second; undefined or 0 is unlimited. */
  readonly bandwidthLimit?: number;
  /** The replication job sending it, when one is (binds an agents' transfer to it). */
  readonly jobId?: string;
  /** Called as bytes move (at most a few times a second); `expected` is 0 when unknown. */
  readonly onProgress?: (bytes: number, expected: number) => void;
  readonly signal: AbortSignal;
}

/** What a finished send moved. */
export interface SendResult {
  readonly bytes: number;
}

/** ZFS replication between nodes. */
export interface ZfsReplicationDriver extends SnapshotDriver {
  /**
   * Sends a snapshot into the same dataset name on `toNode`, creating it
   * there on a full send. REPLICATION_DIVERGED when the target refuses the
   * stream (the dataset exists without the base as its newest snapshot).
   */
  sendSnapshot(options: SendOptions): Promise<SendResult>;
}

/** One side of a send split across two hosts (each node's agent holds one). */
export interface StreamSendOptions {
  readonly dataset: DatasetRef;
  /** The copy to act on (default: where the backend keeps the dataset). */
  readonly nodeId?: string;
  /** Incremental from this snapshot, which both sides hold; full when undefined. */
  readonly base?: string;
  readonly signal: AbortSignal;
}

/** A send stream being produced. */
export interface SnapshotStream {
  /** The bytes of the send, to be fed to a receiveStream on another host. */
  readonly stream: Readable;
  /** Resolves once the sender ended cleanly; rejects with its coded error. */
  readonly done: Promise<void>;
}

/** ZFS replication whose two halves run on different hosts (`zfs send` here, `zfs receive` there). */
export interface StreamReplicationDriver extends SnapshotDriver {
  /** Starts sending `snapshot` of the node's copy; SNAPSHOT_NOT_FOUND, DATASET_NOT_FOUND before any byte. */
  openSendStream(
    options: StreamSendOptions & { readonly snapshot: string },
  ): Promise<SnapshotStream>;
  /**
   * Receives a send stream into the node's copy (creating it on a full
   * send). Nothing changes unless the whole stream arrived intact;
   * REPLICATION_DIVERGED when the copy does not end at `base`.
   */
  receiveStream(options: StreamSendOptions & { readonly stream: Readable }): Promise<SendResult>;
}

/** Whether the driver can send and receive on separate hosts. */
export function canStream(driver: StorageDriver): driver is StreamReplicationDriver {
  const d = driver as Partial<StreamReplicationDriver>;
  return (
    canSnapshot(driver) &&
    typeof d.openSendStream === "function" &&
    typeof d.receiveStream === "function"
  );
}

/** RBD templates (protected snapshots) and their copy-on-write clones. */
export interface RbdCloneDriver extends SnapshotDriver {
  /** Protects a snapshot from deletion so clones may depend on it; already protected is fine. */
  protectSnapshot(target: SnapshotTarget, signal: AbortSignal): Promise<void>;
  /** Images cloned from the snapshot (including ones in the trash, which still depend on it). */
  listClones(target: SnapshotTarget, signal: AbortSignal): Promise<DatasetRef[]>;
  /** Clones a protected snapshot into a new image; DATASET_EXISTS when the name is taken. */
  cloneSnapshot(target: SnapshotTarget, image: DatasetRef, signal: AbortSignal): Promise<void>;
}

/** RBD images as a whole: what they were cloned from, deleting and flattening them. */
export interface RbdImageDriver extends RbdCloneDriver {
  /** The snapshot an image was cloned from; undefined for one without a parent; DATASET_NOT_FOUND when missing. */
  imageParent(image: DatasetRef, signal: AbortSignal): Promise<SnapshotTarget | undefined>;
  /**
   * Deletes an image with its snapshots: DATASET_NOT_FOUND when missing,
   * IMAGE_HAS_CLONES while a snapshot of it has clones (a protected one
   * without clones is unprotected and deleted).
   */
  deleteImage(image: DatasetRef, signal: AbortSignal): Promise<void>;
  /** Copies a clone's data from its parent so it no longer depends on it; IMAGE_NOT_A_CLONE without a parent. */
  flattenImage(image: DatasetRef, signal: AbortSignal): Promise<void>;
}

/** Whether the driver can delete and flatten RBD images. */
export function canManageImages(driver: StorageDriver): driver is RbdImageDriver {
  const d = driver as Partial<RbdImageDriver>;
  return (
    canClone(driver) &&
    typeof d.imageParent === "function" &&
    typeof d.deleteImage === "function" &&
    typeof d.flattenImage === "function"
  );
}

/** Reporting a dataset's size (an optional ability: listings show 0, unknown, without it). */
export interface DatasetSizeDriver extends StorageDriver {
  /** Bytes the dataset's copy on `nodeId` holds (its volume size); undefined when it does not exist. */
  datasetSize(
    dataset: DatasetRef,
    signal: AbortSignal,
    nodeId?: string,
  ): Promise<number | undefined>;
}

/** Whether the driver reports dataset sizes. */
export function canSize(driver: StorageDriver): driver is DatasetSizeDriver {
  return typeof (driver as Partial<DatasetSizeDriver>).datasetSize === "function";
}

/** Whether the driver can take and delete snapshots. */
export function canSnapshot(driver: StorageDriver): driver is SnapshotDriver {
  const d = driver as Partial<SnapshotDriver>;
  return typeof d.createSnapshot === "function" && typeof d.deleteSnapshot === "function";
}

/** Whether the driver can replicate ZFS datasets between nodes. */
export function canReplicate(driver: StorageDriver): driver is ZfsReplicationDriver {
  return (
    canSnapshot(driver) &&
    typeof (driver as Partial<ZfsReplicationDriver>).sendSnapshot === "function"
  );
}

/** Whether the driver can protect RBD snapshots and clone them. */
export function canClone(driver: StorageDriver): driver is RbdCloneDriver {
  const d = driver as Partial<RbdCloneDriver>;
  return (
    canSnapshot(driver) &&
    typeof d.protectSnapshot === "function" &&
    typeof d.listClones === "function" &&
    typeof d.cloneSnapshot === "function"
  );
}

/** A stable text key of a dataset, `zfs:tank/vm-1` or `rbd:rbd/vm-1`. */
export function datasetKey(dataset: DatasetRef): string {
  const backend =
    dataset.backend === StorageBackend.BACKEND_ZFS
      ? "zfs"
      : dataset.backend === StorageBackend.BACKEND_RBD
        ? "rbd"
        : "unknown";
  return `${backend}:${dataset.pool}/${dataset.name}`;
}
