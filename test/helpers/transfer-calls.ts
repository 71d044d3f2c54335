import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
  DownloadTransferRequestSchema,
  OperationKind,
  OperationOutcome,
  TransferChunkSchema,
} from "../../src/gen/debvisor/v1/agent_pb.js";
import { StorageBackend } from "../../src/gen/debvisor/v1/storage_pb.js";
import { agentStatus } from "./agent-status.js";
import { eventually } from "./eventually.js";
import { nodeChannel } from "./node-stream.js";

/** DownloadTransfer at `server` with the certificate in `nodeDir`; resolves with the bytes received. */
export function downloadTransfer(
  server: string,
  nodeDir: string,
  ticket: string,
  /** Called at each chunk received: a test can wait for the transfer to be under way. */
  onChunk?: () => void,
): Promise<number> {
  const ch = nodeChannel(server, nodeDir);
  const call = ch.makeServerStreamRequest(
    "/debvisor.v1.AgentService/DownloadTransfer",
    (m: Uint8Array) => Buffer.from(m),
    (b: Buffer) => fromBinary(TransferChunkSchema, b),
    toBinary(DownloadTransferRequestSchema, create(DownloadTransferRequestSchema, { ticket })),
    new grpc.Metadata(),
    { deadline: Date.now() + 20_000 },
  );
  let bytes = 0;
  return new Promise<number>((resolve, reject) => {
    call.on("data", (m: { data: Uint8Array }) => {
      bytes += m.data.length;
      onChunk?.();
    });
    call.on("error", reject);
    call.on("end", () => resolve(bytes));
  }).finally(() => ch.close());
}

/** The snapshots of `dataset` in the simulated storage of the agent in `nodeDir` (undefined: no copy). */
export async function storageSnapshots(
  nodeDir: string,
  dataset: string,
): Promise<string[] | undefined> {
  const status = await agentStatus(nodeDir, { storage: "sim" });
  assert.ok(status.storage !== undefined, `${nodeDir}: no storage`);
  return status.storage.datasets.find((d) => d.dataset === dataset)?.snapshots;
}

/**
 * A stream in node-b's name (its certificate in `nodeDir`) to `server` that answers listing with `snapshots` and hands
 * out the download ticket its receive operation carries; its receive fails on `fail()`.
 */
export function fakeTarget(server: string, nodeDir: string, dataset: string, snapshots: string[]) {
  const ch = nodeChannel(server, nodeDir);
  const call = ch.makeBidiStreamRequest(
    "/debvisor.v1.AgentService/Connect",
    (m: Uint8Array) => Buffer.from(m),
    (b: Buffer) => fromBinary(ControlMessageSchema, b),
    new grpc.Metadata(),
    {},
  );
  call.on("error", () => {});
  const send = (m: Parameters<typeof create<typeof AgentMessageSchema>>[1]) =>
    call.write(toBinary(AgentMessageSchema, create(AgentMessageSchema, m)));
  const now = () => ({ seconds: BigInt(Math.floor(Date.now() / 1000)) });
  const result = (operationId: string, ok: boolean) =>
    send({
      kind: {
        case: "result",
        value: {
          operationId,
          outcome: ok ? OperationOutcome.SUCCEEDED : OperationOutcome.FAILED,
          reason: ok ? "" : "STORAGE_UNAVAILABLE",
        },
      },
    });
  let gotTicket: (t: string) => void = () => {};
  const ticket = new Promise<string>((r) => {
    gotTicket = r;
  });
  let receiving: string | undefined;
  call.on("data", (m: ControlMessage) => {
    if (m.kind.case !== "dispatch") return;
    const d = m.kind.value;
    if (d.kind === OperationKind.LIST_SNAPSHOTS) {
      const [pool, name] = dataset.slice(4).split("/");
      send({
        kind: {
          case: "storageReport",
          value: {
            operationId: d.operationId,
            found: true,
            snapshots: snapshots.map((s) => ({
              ref: {
                dataset: { backend: StorageBackend.BACKEND_ZFS, pool, name },
                snapshotName: s,
              },
            })),
          },
        },
      });
      result(d.operationId, true);
    } else if (d.kind === OperationKind.RECEIVE_SNAPSHOT) {
      receiving = d.operationId;
      gotTicket(d.params.ticket ?? "");
    }
  });
  send({
    kind: {
      case: "hello",
      value: {
        info: { id: { id: "node-b" }, hostname: "node-b.example" },
        agentVersion: "test",
        capabilities: ["storage:sim", "op:list-snapshots", "op:receive-snapshot"],
        health: { nodeId: { id: "node-b" }, timestamp: now() },
      },
    },
  });
  return {
    ticket,
    fail: () => {
      void eventually(() => assert.ok(receiving !== undefined), { timeoutMs: 10_000 }).then(() =>
        result(receiving as string, false),
      );
    },
    close: () => {
      call.cancel();
      ch.close();
    },
  };
}
