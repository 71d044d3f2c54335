import { RpcError } from "../core/index.js";
import {
  createThrottle,
  decodeStorageParams,
  type OperationSend as Send,
} from "../drivers/index.js";
import { type OperationDispatch, OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import type { SnapshotInfo } from "../gen/debvisor/v1/storage_pb.js";
import type { NodeStorage } from "./node-storage.js";
import type { TransferClient } from "./transfer-client.js";

/** Hello capabilities of a node's storage: `storage:<kind>` and the operations it runs. */
export function storageCapabilities(storage: NodeStorage | undefined): string[] {
  if (storage === undefined) return [];
  const ops = ["op:list-snapshots", "op:create-snapshot", "op:destroy-snapshot"];
  if (storage.stream !== undefined) ops.push("op:send-snapshot", "op:receive-snapshot");
  return [`storage:${storage.kind}`, ...ops];
}

/** A ticket is forgotten when its operation has not come this long after it. */
const TICKET_KEEP_MS = 120_000;

/**
 * Runs storage operations. A transfer's ticket and relay come in its params
 * (an older control plane pushes the ticket separately on the stream; that
 * one is held in memory only).
 */
export interface StorageOperations {
  /** Keeps a transfer ticket for the operation it names (never written anywhere). */
  ticket(operationId: string, ticket: string): void;
  /** Runs one storage operation; sends its StorageReport before returning. */
  run(dispatch: OperationDispatch, signal: AbortSignal): Promise<void>;
}

/** Creates the agent's {@link StorageOperations} over its storage and transfer client. */
export function createStorageOperations(options: {
  storage: NodeStorage | undefined;
  nodeId: string;
  transfers: TransferClient;
  send: Send;
}): StorageOperations {
  const { nodeId, transfers, send } = options;
  const tickets = new Map<string, { ticket: string; at: number }>();
  /** The operation's ticket: in its params, or (from an older control plane) pushed before it. */
  const take = (d: OperationDispatch): string => {
    const operationId = d.operationId;
    const inline = d.params.ticket;
    if (inline !== undefined && inline !== "") return inline;
    const now = Date.now();
    for (const [id, t] of tickets) if (now - t.at > TICKET_KEEP_MS) tickets.delete(id);
    const t = tickets.get(operationId);
    tickets.delete(operationId);
    if (t === undefined)
      throw new RpcError("TRANSFER_TICKET_INVALID", {
        message: "no ticket for this transfer on this stream",
      });
    return t.ticket;
  };
  const report = (
    operationId: string,
    value: { found: boolean; snapshots?: SnapshotInfo[]; bytes?: bigint },
  ) => send({ kind: { case: "storageReport", value: { ...value, operationId } } });

  return {
    ticket(operationId, ticket) {
      tickets.set(operationId, { ticket, at: Date.now() });
    },
    async run(d, signal) {
      const storage = options.storage;
      if (storage === undefined)
        throw new RpcError("STORAGE_UNSUPPORTED", { message: "this agent runs no storage" });
      const p = decodeStorageParams(d.params);
      const id = d.operationId;
      const named = () => {
        if (p.snapshot === undefined)
          throw new RpcError("INVALID_ARGUMENT", { message: "snapshot: required" });
        return { dataset: p.dataset, name: p.snapshot, nodeId };
      };
      switch (d.kind) {
        case OperationKind.LIST_SNAPSHOTS: {
          const snaps = await storage.driver.listSnapshots(p.dataset, signal, nodeId);
          report(id, { found: snaps !== undefined, snapshots: snaps ?? [] });
          return;
        }
        case OperationKind.CREATE_SNAPSHOT: {
          const made = await storage.driver.createSnapshot(named(), signal);
          report(id, { found: true, snapshots: [made] });
          return;
        }
        case OperationKind.DESTROY_SNAPSHOT:
          await storage.driver.deleteSnapshot(named(), signal);
          report(id, { found: true });
          return;
        case OperationKind.SEND_SNAPSHOT: {
          const stream = needStream(storage);
          const ticket = take(d);
          const stop = new AbortController();
          const both = AbortSignal.any([signal, stop.signal]);
          const sending = await stream.openSendStream({
            dataset: p.dataset,
            nodeId,
            snapshot: named().name,
            base: p.base,
            signal: both,
          });
          // The job's bandwidth limit holds here, at the source: the relay and target just follow.
          const throttled = sending.stream.pipe(createThrottle({ bytesPerSecond: p.bandwidth }));
          sending.stream.once("error", (err) => throttled.destroy(err));
          try {
            const bytes = await transfers.upload(ticket, throttled, both, d.params.relay);
            await sending.done;
            report(id, { found: true, bytes: BigInt(bytes) });
          } finally {
            stop.abort();
          }
          return;
        }
        case OperationKind.RECEIVE_SNAPSHOT: {
          const stream = needStream(storage);
          const ticket = take(d);
          const { bytes } = await stream.receiveStream({
            dataset: p.dataset,
            nodeId,
            base: p.base,
            stream: transfers.download(ticket, signal, d.params.relay),
            signal,
          });
          report(id, { found: true, bytes: BigInt(bytes) });
          return;
        }
        default:
          throw new RpcError("INVALID_ARGUMENT", { message: "not a storage operation" });
      }
    },
  };
}

function needStream(storage: NodeStorage) {
  if (storage.stream === undefined)
    throw new RpcError("STORAGE_UNSUPPORTED", { message: `${storage.kind} does not replicate` });
  return storage.stream;
}
