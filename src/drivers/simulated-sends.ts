// The simulated storage's replication: ZFS sends between nodes, either in
// one call (sendSnapshot, moving bytes in simulated time) or as a byte
// stream one node opens and another receives.

import { create } from "@bufbuild/protobuf";
import { RpcError, throwIfAborted, toRpcError } from "../core/index.js";
import { type DatasetRef, DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { isZfs, type SimulatedCopies } from "./simulated-copies.js";
import {
  readSimulatedSendStream,
  type SimulatedStreamHeader,
  simulatedSendStream,
} from "./simulated-send-stream.js";
import type { SimulatedStorage, SimulatedStorageOptions } from "./simulated-storage.js";
import type { SimulatedStorageFaults } from "./simulated-storage-faults.js";
import type { StoredCopy, StoredSnap } from "./simulated-storage-state.js";
import { transfer } from "./simulated-transfer.js";
import { datasetKey } from "./storage-driver.js";
import { backendName, snapshotSpec } from "./storage-names.js";

/** The send methods of {@link SimulatedStorage}. */
export type SimulatedSends = Pick<
  SimulatedStorage,
  "sendSnapshot" | "openSendStream" | "receiveStream"
>;

/** What the sends use: the shared copies and faults, and the storage's validated options. */
export interface SimulatedSendsDeps {
  readonly state: SimulatedCopies;
  readonly faults: SimulatedStorageFaults;
  /** Simulated link speed, bytes per second. */
  readonly rate: number;
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly onSend?: SimulatedStorageOptions["onSend"];
}

/** Creates the send methods. */
export function createSimulatedSends(deps: SimulatedSendsDeps): SimulatedSends {
  const { state, faults, rate, sleep, onSend } = deps;
  const { copies, copyKey, copyOf, need } = state;

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
    return { source, sent: source.snapshots[snapIndex] as StoredSnap, total };
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
    target: StoredCopy | undefined,
    sent: StoredSnap,
    sizeBytes: number,
  ) => {
    const received: StoredSnap = { ...sent, holds: 0, protected: false };
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

  return {
    async sendSnapshot(send) {
      const { dataset, signal } = send;
      const { source, sent, total } = planSend(dataset, send.fromNode, send.snapshot, send.base);
      throwIfAborted(signal);
      const target = receivable(dataset, send.toNode, send.base);
      const fault = faults.take("send", dataset);
      onSend?.({ type: "start", options: send });
      try {
        await transfer(total, send, fault, rate, sleep);
      } finally {
        onSend?.({ type: "end", options: send });
      }
      land(dataset, send.toNode, target, sent, source.sizeBytes);
      return { bytes: total };
    },
    async openSendStream(send) {
      const { source, sent, total } = planSend(send.dataset, send.nodeId, send.snapshot, send.base);
      throwIfAborted(send.signal);
      if (faults.take("send", send.dataset) !== undefined)
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
      const sent: StoredSnap = { ...header.snapshot, holds: 0, protected: false };
      land(dataset, receive.nodeId, target, sent, header.sizeBytes);
      return { bytes };
    },
  };
}
