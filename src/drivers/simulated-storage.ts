// The in-process storage backend of dev mode and tests: ZFS datasets per
// node and RBD images, with snapshots, clones and sends in simulated time,
// and faults to inject. The parts: simulated-copies.ts (the shared state),
// simulated-snapshots.ts, simulated-rbd-images.ts, simulated-sends.ts,
// simulated-storage-faults.ts and persisted-storage.ts (the state file).

import type { Clock } from "../core/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import { persistedStorage } from "./persisted-storage.js";
import { createSimulatedCopies, isZfs } from "./simulated-copies.js";
import { createSimulatedRbdImages } from "./simulated-rbd-images.js";
import { createSimulatedSends } from "./simulated-sends.js";
import { createSimulatedSnapshots } from "./simulated-snapshots.js";
import { createSimulatedStorageFaults } from "./simulated-storage-faults.js";
import { readStorageState } from "./simulated-storage-state.js";
import type {
  DatasetSizeDriver,
  RbdImageDriver,
  SendOptions,
  SnapshotTarget,
  StreamReplicationDriver,
  ZfsReplicationDriver,
} from "./storage-driver.js";

const MIB = 1024 * 1024;

/** A dataset the simulation starts with. */
export interface SimulatedDataset {
  readonly dataset: DatasetRef;
  /** The node holding it (ZFS); RBD images are cluster-wide and only note it. */
  readonly nodeId: string;
  readonly sizeBytes: number;
  /** Snapshots it already has, oldest first. */
  readonly snapshots?: readonly { readonly name: string; readonly createdMs: number }[];
}

/** Operations a fault can be injected into. */
export type StorageOp =
  | "listSnapshots"
  | "createSnapshot"
  | "deleteSnapshot"
  | "send"
  | "protect"
  | "clone"
  | "deleteImage"
  | "flatten";

/** The next matching calls fail with STORAGE_UNAVAILABLE, as if a disk or link broke. */
export interface StorageFault {
  readonly op: StorageOp;
  /** For sends: the share of the bytes moved before the failure (0 to 1, default 0.5). */
  readonly afterFraction?: number;
  /** How many calls fail (default 1). */
  readonly times?: number;
  /** Only calls on this dataset (default any). */
  readonly dataset?: DatasetRef;
}

/** Options of {@link createSimulatedStorage}. */
export interface SimulatedStorageOptions {
  readonly datasets: readonly SimulatedDataset[];
  readonly clock: Clock;
  /**
   * Keeps the datasets, snapshots, holds and clones in this file (written
   * after each change, reloaded at start in place of `datasets`), so they
   * survive restarts as the simulated hypervisors' world does.
   */
  readonly stateFile?: string;
  /** Simulated link speed of sends, bytes per second (default 1 GiB/s). */
  readonly bytesPerSecond?: number;
  /** Share of a dataset that changes per hour (default 0.02): sets snapshot sizes and incremental sends. */
  readonly churnPerHour?: number;
  /** How a send waits out simulated time (default: real timers). Tests pass one that advances a manual clock. */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Observes sends starting and ending. */
  readonly onSend?: (event: {
    readonly type: "start" | "end";
    readonly options: SendOptions;
  }) => void;
}

/** The in-process storage backend of dev mode and tests: ZFS datasets per node and RBD images. */
export interface SimulatedStorage
  extends ZfsReplicationDriver,
    StreamReplicationDriver,
    RbdImageDriver,
    DatasetSizeDriver {
  /** Makes the next matching calls fail. */
  injectFault(fault: StorageFault): void;
  /** Places or releases a ZFS hold on a snapshot (`zfs hold` / `zfs release`). */
  setHold(target: SnapshotTarget, held: boolean): void;
  /** Adds a dataset, for example the disk of a VM created later. */
  addDataset(dataset: SimulatedDataset): void;
  /** Every copy on `nodeId` (ZFS) and every RBD image, for a node's inventory. */
  datasetsOn(nodeId: string): DatasetRef[];
}

/** Creates a {@link SimulatedStorage}. */
export function createSimulatedStorage(options: SimulatedStorageOptions): SimulatedStorage {
  const rate = options.bytesPerSecond ?? 1024 * MIB;
  const churn = options.churnPerHour ?? 0.02;
  if (!(rate > 0) || !(churn >= 0))
    throw new TypeError("bytesPerSecond and churnPerHour must be positive");
  const sleep = options.sleep ?? abortableSleep;
  const state = createSimulatedCopies(churn);
  const { copies, homes, addDataset } = state;
  const faults = createSimulatedStorageFaults();

  for (const d of options.datasets) addDataset(d);
  const saved = options.stateFile === undefined ? undefined : readStorageState(options.stateFile);
  if (saved !== undefined) {
    copies.clear();
    homes.clear();
    for (const [k, v] of saved.copies) copies.set(k, v);
    for (const [k, v] of saved.homes) homes.set(k, v);
  }

  const driver: SimulatedStorage = {
    addDataset,
    datasetsOn: (nodeId) =>
      [...copies]
        .filter(([key, c]) => !isZfs(c.dataset) || key.startsWith(`${nodeId}|`))
        .map(([, c]) => c.dataset),
    injectFault: faults.inject,
    ...createSimulatedSnapshots(state, faults, options.clock),
    ...createSimulatedRbdImages(state, faults),
    ...createSimulatedSends({ state, faults, rate, sleep, onSend: options.onSend }),
  };
  return options.stateFile === undefined
    ? driver
    : persistedStorage(driver, options.stateFile, { copies, homes }, saved === undefined);
}
