// The simulated storage's shared state: every copy of a dataset (a ZFS
// dataset on a node, or an RBD image) with its snapshots, the node each ZFS
// dataset started on, and the lookups and figures every part uses.

import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import type { SimulatedDataset } from "./simulated-storage.js";
import type { StorageState, StoredCopy, StoredSnap } from "./simulated-storage-state.js";
import { datasetKey } from "./storage-driver.js";
import { backendName, snapshotLabels } from "./storage-names.js";

const MIB = 1024 * 1024;
/** An hour, in ms: the unit of the churn rate. */
export const HOUR_MS = 3_600_000;

/** The copies and the lookups over them; the maps are the state the file keeps. */
export interface SimulatedCopies extends StorageState {
  /** The map key of `d`'s copy on `nodeId` (ZFS; default its home node), or of the RBD image. */
  copyKey(d: DatasetRef, nodeId?: string): string;
  copyOf(d: DatasetRef, nodeId?: string): StoredCopy | undefined;
  /** The copy, else DATASET_NOT_FOUND. */
  need(d: DatasetRef, nodeId?: string): StoredCopy;
  /** The snapshot of `copy` named `name`, else SNAPSHOT_NOT_FOUND. */
  snapOf(copy: StoredCopy, name: string): StoredSnap;
  /** A snapshot as the API shows it. */
  info(copy: StoredCopy, s: StoredSnap): SnapshotInfo;
  /** Bytes that changed between `fromMs` and `toMs`, as the churn rate says. */
  changed(copy: StoredCopy, fromMs: number, toMs: number): number;
  /** Adds a dataset; a ZFS dataset's first node is its home. */
  addDataset(d: SimulatedDataset): void;
  /** The images cloned from snapshot `snapshot` of the image keyed `key`. */
  clonesOf(key: string, snapshot: string): DatasetRef[];
}

/** Whether `d` is a ZFS dataset (kept per node) rather than an RBD image (cluster-wide). */
export const isZfs = (d: DatasetRef) => d.backend === StorageBackend.BACKEND_ZFS;

/** Creates the empty state; `churn` is the share of a dataset that changes per hour. */
export function createSimulatedCopies(churn: number): SimulatedCopies {
  const copies = new Map<string, StoredCopy>();
  const homes = new Map<string, string>();

  const copyKey = (d: DatasetRef, nodeId?: string) => {
    const key = datasetKey(d);
    return isZfs(d) ? `${nodeId ?? homes.get(key) ?? ""}|${key}` : key;
  };
  const copyOf = (d: DatasetRef, nodeId?: string) => copies.get(copyKey(d, nodeId));
  /** Bytes that changed between `fromMs` and `toMs`, as the churn rate says. */
  const changed = (copy: StoredCopy, fromMs: number, toMs: number) =>
    Math.min(
      copy.sizeBytes,
      Math.max(
        Math.min(MIB, copy.sizeBytes),
        Math.round((copy.sizeBytes * churn * (toMs - fromMs)) / HOUR_MS),
      ),
    );

  return {
    copies,
    homes,
    copyKey,
    copyOf,
    need(d, nodeId) {
      const copy = copyOf(d, nodeId);
      if (copy === undefined) throw new RpcError("DATASET_NOT_FOUND");
      return copy;
    },
    snapOf(copy, name) {
      const snap = copy.snapshots.find((s) => s.name === name);
      if (snap === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
      return snap;
    },
    info: (copy, s) =>
      create(SnapshotInfoSchema, {
        ref: { dataset: copy.dataset, snapshotName: s.name },
        created: { seconds: BigInt(Math.floor(s.createdMs / 1000)), nanos: 0 },
        sizeBytes: BigInt(isZfs(copy.dataset) ? s.usedBytes : copy.sizeBytes),
        held: s.holds > 0 || s.protected,
        protected: s.protected,
        userRefs: s.holds,
        labels: snapshotLabels(s.name),
      }),
    changed,
    addDataset(d) {
      backendName(d.dataset);
      if (!Number.isSafeInteger(d.sizeBytes) || d.sizeBytes < 0)
        throw new TypeError("sizeBytes must be a non-negative integer");
      const key = datasetKey(d.dataset);
      if (isZfs(d.dataset) && !homes.has(key)) homes.set(key, d.nodeId);
      const copy: StoredCopy = {
        dataset: create(DatasetRefSchema, d.dataset),
        sizeBytes: d.sizeBytes,
        snapshots: [],
      };
      let prev = (d.snapshots?.[0]?.createdMs ?? 0) - 24 * HOUR_MS;
      for (const s of d.snapshots ?? []) {
        copy.snapshots.push({
          name: s.name,
          createdMs: s.createdMs,
          usedBytes: changed(copy, prev, s.createdMs),
          holds: 0,
          protected: false,
        });
        prev = s.createdMs;
      }
      copies.set(copyKey(d.dataset, d.nodeId), copy);
    },
    clonesOf: (key, snapshot) =>
      [...copies.values()]
        .filter((c) => c.parent?.key === key && c.parent.snapshot === snapshot)
        .map((c) => c.dataset),
  };
}
