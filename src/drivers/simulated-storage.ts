import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError, throwIfAborted, toRpcError } from "../core/index.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import {
  readSimulatedSendStream,
  type SimulatedStreamHeader,
  simulatedSendStream,
} from "./simulated-send-stream.js";
import {
  readStorageState,
  type StorageState,
  type StoredCopy,
  type StoredSnap,
  storageStateText,
  writeStorageState,
} from "./simulated-storage-state.js";
import {
  type DatasetSizeDriver,
  datasetKey,
  type RbdImageDriver,
  type SendOptions,
  type SnapshotTarget,
  type StreamReplicationDriver,
  type ZfsReplicationDriver,
} from "./storage-driver.js";
import { backendName, snapshotLabels, snapshotSpec } from "./storage-names.js";

const MIB = 1024 * 1024;
const HOUR_MS = 3_600_000;
/** A send moves its bytes in steps of this much simulated time... */
const STEP_MS = 100;
/** ...but never in more steps than this. */
const MAX_STEPS = 1000;

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

type Snap = StoredSnap;
type Copy = StoredCopy;

/** Creates a {@link SimulatedStorage}. */
export function createSimulatedStorage(options: SimulatedStorageOptions): SimulatedStorage {
  const { clock } = options;
  const rate = options.bytesPerSecond ?? 1024 * MIB;
  const churn = options.churnPerHour ?? 0.02;
  if (!(rate > 0) || !(churn >= 0))
    throw new TypeError("bytesPerSecond and churnPerHour must be positive");
  const sleep = options.sleep ?? abortableSleep;
  const copies = new Map<string, Copy>();
  const homes = new Map<string, string>();
  const faults: { fault: StorageFault; left: number }[] = [];

  const isZfs = (d: DatasetRef) => d.backend === StorageBackend.BACKEND_ZFS;
  const copyKey = (d: DatasetRef, nodeId?: string) => {
    const key = datasetKey(d);
    return isZfs(d) ? `${nodeId ?? homes.get(key) ?? ""}|${key}` : key;
  };
  const copyOf = (d: DatasetRef, nodeId?: string) => copies.get(copyKey(d, nodeId));
  const need = (d: DatasetRef, nodeId?: string): Copy => {
    const copy = copyOf(d, nodeId);
    if (copy === undefined) throw new RpcError("DATASET_NOT_FOUND");
    return copy;
  };
  const snapOf = (copy: Copy, name: string): Snap => {
    const snap = copy.snapshots.find((s) => s.name === name);
    if (snap === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
    return snap;
  };
  /** A matching injected fault, consumed; undefined when none applies. */
  const takeFault = (op: StorageOp, d: DatasetRef): StorageFault | undefined => {
    const i = faults.findIndex(
      (f) =>
        f.fault.op === op &&
        (f.fault.dataset === undefined || datasetKey(f.fault.dataset) === datasetKey(d)),
    );
    const hit = faults[i];
    if (hit === undefined) return undefined;
    hit.left -= 1;
    if (hit.left <= 0) faults.splice(i, 1);
    return hit.fault;
  };
  const failIfFaulted = (op: StorageOp, d: DatasetRef) => {
    if (takeFault(op, d) !== undefined)
      throw new RpcError("STORAGE_UNAVAILABLE", { cause: new Error(`injected ${op} fault`) });
  };
  const info = (copy: Copy, s: Snap): SnapshotInfo =>
    create(SnapshotInfoSchema, {
      ref: { dataset: copy.dataset, snapshotName: s.name },
      created: { seconds: BigInt(Math.floor(s.createdMs / 1000)), nanos: 0 },
      sizeBytes: BigInt(isZfs(copy.dataset) ? s.usedBytes : copy.sizeBytes),
      held: s.holds > 0 || s.protected,
      protected: s.protected,
      userRefs: s.holds,
      labels: snapshotLabels(s.name),
    });
  /** Bytes that changed between `fromMs` and `toMs`, as the churn rate says. */
  const changed = (copy: Copy, fromMs: number, toMs: number) =>
    Math.min(
      copy.sizeBytes,
      Math.max(
        Math.min(MIB, copy.sizeBytes),
        Math.round((copy.sizeBytes * churn * (toMs - fromMs)) / HOUR_MS),
      ),
    );

  const addDataset = (d: SimulatedDataset) => {
    backendName(d.dataset);
    if (!Number.isSafeInteger(d.sizeBytes) || d.sizeBytes < 0)
      throw new TypeError("sizeBytes must be a non-negative integer");
    const key = datasetKey(d.dataset);
    if (isZfs(d.dataset) && !homes.has(key)) homes.set(key, d.nodeId);
    const copy: Copy = {
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
  };
  for (const d of options.datasets) addDataset(d);
  const saved = options.stateFile === undefined ? undefined : readStorageState(options.stateFile);
  if (saved !== undefined) {
    copies.clear();
    homes.clear();
    for (const [k, v] of saved.copies) copies.set(k, v);
    for (const [k, v] of saved.homes) homes.set(k, v);
  }

  /** The source side of a send: the snapshot and the bytes it moves. */
  const planSend = (dataset: DatasetRef, node: string | undefined, name: string, base?: string) => {
    snapshotSpec(dataset, name);
    if (!isZfs(dataset)) throw new RpcError("STORAGE_UNSUPPORTED");
    const source = need(dataset, node);
    const snapIndex = source.snapshots.findIndex((s) => s.name === name);
    if (snapIndex < 0) throw new RpcError("SNAPSHOT_NOT_FOUND");
    const baseIndex = base === undefined ? -1 : source.snapshots.findIndex((s) => s.name === base);
    if (base !== undefined && (baseIndex < 0 || baseIndex >= snapIndex))
      throw new RpcError("SNAPSHOT_NOT_FOUND", { message: "incremental base not found" });
    const total =
      base === undefined
        ? source.sizeBytes
        : source.snapshots.slice(baseIndex + 1, snapIndex + 1).reduce((n, s) => n + s.usedBytes, 0);
    return { source, sent: source.snapshots[snapIndex] as Snap, total };
  };
  /** The target copy a send may land on: none for a full send, else one whose newest is the base. */
  const receivable = (dataset: DatasetRef, node: string | undefined, base?: string) => {
    const target = copyOf(dataset, node);
    const targetNewest = target?.snapshots[target.snapshots.length - 1]?.name;
    if (base === undefined ? target !== undefined : targetNewest !== base)
      throw new RpcError("REPLICATION_DIVERGED", {
        message:
          base === undefined
            ? "the target node already holds the dataset"
            : `the target's newest snapshot is ${targetNewest ?? "none"}, not ${base}: it has snapshots the source lacks`,
      });
    return target;
  };
  const land = (
    dataset: DatasetRef,
    node: string | undefined,
    target: Copy | undefined,
    sent: Snap,
    sizeBytes: number,
  ) => {
    const received: Snap = { ...sent, holds: 0, protected: false };
    if (target === undefined)
      copies.set(copyKey(dataset, node), {
        dataset: create(DatasetRefSchema, dataset),
        sizeBytes,
        snapshots: [received],
      });
    else {
      target.snapshots.push(received);
      target.sizeBytes = sizeBytes;
    }
  };

  const driver: SimulatedStorage = {
    addDataset,
    datasetsOn: (nodeId) =>
      [...copies]
        .filter(([key, c]) => !isZfs(c.dataset) || key.startsWith(`${nodeId}|`))
        .map(([, c]) => c.dataset),
    injectFault(fault) {
      faults.push({ fault, left: fault.times ?? 1 });
    },
    setHold(target, held) {
      const snap = snapOf(need(target.dataset, target.nodeId), target.name);
      snap.holds = held ? snap.holds + 1 : Math.max(0, snap.holds - 1);
    },
    async datasetSize(dataset, signal, nodeId) {
      backendName(dataset);
      throwIfAborted(signal);
      return copyOf(dataset, nodeId)?.sizeBytes;
    },
    async listSnapshots(dataset, signal, nodeId) {
      backendName(dataset);
      throwIfAborted(signal);
      failIfFaulted("listSnapshots", dataset);
      const copy = copyOf(dataset, nodeId);
      return copy?.snapshots.map((s) => info(copy, s));
    },
    async createSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      failIfFaulted("createSnapshot", target.dataset);
      const copy = need(target.dataset, target.nodeId);
      if (copy.snapshots.some((s) => s.name === target.name)) throw new RpcError("SNAPSHOT_EXISTS");
      const now = clock.now();
      const last = copy.snapshots[copy.snapshots.length - 1];
      const snap: Snap = {
        name: target.name,
        createdMs: now,
        usedBytes: changed(copy, last?.createdMs ?? now - 24 * HOUR_MS, now),
        holds: 0,
        protected: false,
      };
      copy.snapshots.push(snap);
      return info(copy, snap);
    },
    async deleteSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      failIfFaulted("deleteSnapshot", target.dataset);
      const copy = need(target.dataset, target.nodeId);
      const snap = snapOf(copy, target.name);
      if (snap.holds > 0) throw new RpcError("SNAPSHOT_HELD");
      if (clonesOf(copies, datasetKey(copy.dataset), snap.name).length > 0)
        throw new RpcError("SNAPSHOT_HAS_CLONES");
      copy.snapshots = copy.snapshots.filter((s) => s !== snap);
    },
    async protectSnapshot(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      failIfFaulted("protect", target.dataset);
      if (isZfs(target.dataset)) throw new RpcError("STORAGE_UNSUPPORTED");
      snapOf(need(target.dataset), target.name).protected = true;
    },
    async listClones(target, signal) {
      snapshotSpec(target.dataset, target.name);
      throwIfAborted(signal);
      snapOf(need(target.dataset), target.name);
      return clonesOf(copies, datasetKey(target.dataset), target.name);
    },
    async cloneSnapshot(target, image, signal) {
      snapshotSpec(target.dataset, target.name);
      backendName(image, "new_image");
      throwIfAborted(signal);
      failIfFaulted("clone", target.dataset);
      if (isZfs(target.dataset) || isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const source = need(target.dataset);
      if (!snapOf(source, target.name).protected) throw new RpcError("SNAPSHOT_NOT_PROTECTED");
      if (copyOf(image) !== undefined) throw new RpcError("DATASET_EXISTS");
      copies.set(copyKey(image), {
        dataset: create(DatasetRefSchema, image),
        sizeBytes: source.sizeBytes,
        snapshots: [],
        parent: { key: datasetKey(target.dataset), snapshot: target.name },
      });
    },
    async imageParent(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const parent = need(image).parent;
      if (parent === undefined) return undefined;
      const from = copies.get(parent.key);
      return from === undefined ? undefined : { dataset: from.dataset, name: parent.snapshot };
    },
    async deleteImage(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      failIfFaulted("deleteImage", image);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const copy = need(image);
      const key = datasetKey(image);
      if (copy.snapshots.some((s) => clonesOf(copies, key, s.name).length > 0))
        throw new RpcError("IMAGE_HAS_CLONES");
      copies.delete(copyKey(image));
    },
    async flattenImage(image, signal) {
      backendName(image);
      throwIfAborted(signal);
      failIfFaulted("flatten", image);
      if (isZfs(image)) throw new RpcError("STORAGE_UNSUPPORTED");
      const copy = need(image);
      if (copy.parent === undefined) throw new RpcError("IMAGE_NOT_A_CLONE");
      copy.parent = undefined;
    },
    async sendSnapshot(send) {
      const { dataset, signal } = send;
      const { source, sent, total } = planSend(dataset, send.fromNode, send.snapshot, send.base);
      throwIfAborted(signal);
      const target = receivable(dataset, send.toNode, send.base);
      const fault = takeFault("send", dataset);
      options.onSend?.({ type: "start", options: send });
      try {
        await transfer(total, send, fault, rate, sleep);
      } finally {
        options.onSend?.({ type: "end", options: send });
      }
      land(dataset, send.toNode, target, sent, source.sizeBytes);
      return { bytes: total };
    },
    async openSendStream(send) {
      const { source, sent, total } = planSend(send.dataset, send.nodeId, send.snapshot, send.base);
      throwIfAborted(send.signal);
      if (takeFault("send", send.dataset) !== undefined)
        throw new RpcError("STORAGE_UNAVAILABLE", { cause: new Error("injected send fault") });
      const header: SimulatedStreamHeader = {
        v: 1,
        dataset: datasetKey(send.dataset),
        base: send.base ?? null,
        snapshot: { name: sent.name, createdMs: sent.createdMs, usedBytes: sent.usedBytes },
        sizeBytes: source.sizeBytes,
        payload: total,
      };
      const stream = simulatedSendStream(header, send.signal);
      const done = new Promise<void>((resolve, reject) => {
        stream.once("end", resolve);
        stream.once("error", (err) => reject(toRpcError(err)));
        stream.once("close", () => {
          if (!stream.readableEnded) reject(new RpcError("CANCELLED"));
        });
      });
      done.catch(() => {});
      return { stream, done };
    },
    async receiveStream(receive) {
      const { dataset } = receive;
      backendName(dataset);
      if (!isZfs(dataset)) throw new RpcError("STORAGE_UNSUPPORTED");
      receivable(dataset, receive.nodeId, receive.base);
      const { header, bytes } = await readSimulatedSendStream(receive.stream, receive.signal);
      if (header.dataset !== datasetKey(dataset) || header.base !== (receive.base ?? null))
        throw new RpcError("REPLICATION_DIVERGED", {
          message: "the stream is of another dataset or base",
        });
      snapshotSpec(dataset, header.snapshot.name);
      // Checked again: the copy may have changed while the bytes arrived.
      const target = receivable(dataset, receive.nodeId, receive.base);
      const sent: Snap = { ...header.snapshot, holds: 0, protected: false };
      land(dataset, receive.nodeId, target, sent, header.sizeBytes);
      return { bytes };
    },
  };
  return options.stateFile === undefined
    ? driver
    : persisted(driver, options.stateFile, { copies, homes }, saved === undefined);
}

/** Moves `total` bytes in simulated time, reporting progress; fails part way when a fault says so. */
async function transfer(
  total: number,
  send: SendOptions,
  fault: StorageFault | undefined,
  rate: number,
  sleep: (ms: number, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const limit =
    send.bandwidthLimit !== undefined && send.bandwidthLimit > 0
      ? send.bandwidthLimit
      : Number.POSITIVE_INFINITY;
  const speed = Math.min(rate, limit);
  const durationMs = (total / speed) * 1000;
  const steps = Math.max(1, Math.min(MAX_STEPS, Math.ceil(durationMs / STEP_MS)));
  const failAt =
    fault === undefined ? Number.POSITIVE_INFINITY : total * (fault.afterFraction ?? 0.5);
  let moved = 0;
  for (let i = 1; i <= steps; i++) {
    throwIfAborted(send.signal);
    // Whole milliseconds that still add up to the duration.
    await sleep(
      Math.round((durationMs * i) / steps) - Math.round((durationMs * (i - 1)) / steps),
      send.signal,
    );
    moved = Math.round((total * i) / steps);
    if (moved >= failAt) {
      send.onProgress?.(Math.round(failAt), total);
      throw new RpcError("STORAGE_UNAVAILABLE", {
        message: "send interrupted: the connection to the target node was lost",
        cause: new Error("injected send fault"),
      });
    }
    send.onProgress?.(moved, total);
  }
}

function clonesOf(copies: ReadonlyMap<string, Copy>, key: string, snapshot: string): DatasetRef[] {
  return [...copies.values()]
    .filter((c) => c.parent?.key === key && c.parent.snapshot === snapshot)
    .map((c) => c.dataset);
}

/** Wraps every method so the state is written after a call that changed it. */
function persisted(
  driver: SimulatedStorage,
  file: string,
  state: StorageState,
  fresh: boolean,
): SimulatedStorage {
  let last = storageStateText(state);
  // Only a new state is written at once: a reader (`debvisor-agent status`) never rewrites the file.
  if (fresh) writeStorageState(file, last);
  const save = () => {
    const text = storageStateText(state);
    if (text === last) return;
    writeStorageState(file, text);
    last = text;
  };
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(driver)) {
    if (typeof fn !== "function") {
      wrapped[name] = fn;
      continue;
    }
    wrapped[name] = (...args: unknown[]) => {
      const out = (fn as (...a: unknown[]) => unknown).apply(driver, args);
      if (out instanceof Promise)
        return out.then(
          (v) => {
            save();
            return v;
          },
          (err: unknown) => {
            save();
            throw err;
          },
        );
      save();
      return out;
    };
  }
  return wrapped as unknown as SimulatedStorage;
}
