import { once } from "node:events";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type AgentFiles, openChannel } from "../client/index.js";
import { RpcError } from "../core/index.js";
import {
  DownloadTransferRequestSchema,
  type TransferChunk,
  TransferChunkSchema,
  type TransferReceipt,
  TransferReceiptSchema,
} from "../gen/debvisor/v1/agent_pb.js";

const UPLOAD = "/debvisor.v1.AgentService/UploadTransfer";
const DOWNLOAD = "/debvisor.v1.AgentService/DownloadTransfer";

/** The agent's end of relayed transfers, over mTLS with its node certificate. */
export interface TransferClient {
  /** Uploads `bytes` under the upload ticket; resolves with the bytes the target took. */
  upload(ticket: string, bytes: Readable, signal: AbortSignal): Promise<number>;
  /** The stream uploaded under the transfer whose download ticket this is. */
  download(ticket: string, signal: AbortSignal): Readable;
}

/** Options of {@link createTransferClient}. */
export interface TransferClientOptions {
  readonly files: AgentFiles;
  /** The control-plane process holding this node's stream: it relays the transfer. */
  readonly server: () => string | undefined;
  readonly tlsServerName?: string;
}

/** A transfer call's failure as a coded error (its reason survives from the server's details). */
function failed(err: grpc.ServiceError): RpcError {
  if (err.code === grpc.status.PERMISSION_DENIED)
    return new RpcError("TRANSFER_TICKET_INVALID", { cause: err });
  if (err.code === grpc.status.CANCELLED) return new RpcError("CANCELLED", { cause: err });
  return new RpcError("STORAGE_UNAVAILABLE", {
    message: "the relayed transfer broke",
    cause: err,
  });
}

/** Creates a {@link TransferClient}; each call opens its own channel with the current certificate. */
export function createTransferClient(options: TransferClientOptions): TransferClient {
  const channel = () => {
    const server = options.server();
    if (server === undefined)
      throw new RpcError("AGENT_NOT_CONNECTED", { message: "no control-plane stream" });
    return openChannel({
      name: "agent-transfer",
      server,
      caPem: readFileSync(options.files.ca, "utf8"),
      certPem: readFileSync(options.files.cert, "utf8"),
      keyPem: readFileSync(options.files.key, "utf8"),
      tlsServerName: options.tlsServerName,
    });
  };
  return {
    async upload(ticket, bytes, signal) {
      const ch = channel();
      const call = ch.makeBidiStreamRequest(
        UPLOAD,
        (m: TransferChunk) => Buffer.from(toBinary(TransferChunkSchema, m)),
        (b: Buffer) => fromBinary(TransferReceiptSchema, b),
        new grpc.Metadata(),
        {},
      );
      const onAbort = () => call.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      const receipt = new Promise<TransferReceipt>((resolve, reject) => {
        call.once("data", resolve);
        call.once("error", (err: grpc.ServiceError) => reject(failed(err)));
        call.once("end", () => reject(new RpcError("STORAGE_UNAVAILABLE")));
      });
      receipt.catch(() => bytes.destroy());
      try {
        call.write(create(TransferChunkSchema, { ticket }));
        for await (const chunk of bytes as AsyncIterable<Buffer>) {
          if (!call.write(create(TransferChunkSchema, { data: chunk })))
            await Promise.race([once(call, "drain"), receipt]);
        }
        call.end();
        return Number((await receipt).bytes);
      } catch (err) {
        call.cancel();
        throw err instanceof RpcError
          ? err
          : new RpcError("STORAGE_UNAVAILABLE", { message: "the send stream broke", cause: err });
      } finally {
        signal.removeEventListener("abort", onAbort);
        ch.close();
      }
    },
    download(ticket, signal) {
      const ch = channel();
      const call = ch.makeServerStreamRequest(
        DOWNLOAD,
        (m: Uint8Array) => Buffer.from(m),
        (b: Buffer) => fromBinary(TransferChunkSchema, b),
        toBinary(DownloadTransferRequestSchema, create(DownloadTransferRequestSchema, { ticket })),
        new grpc.Metadata(),
        {},
      );
      const onAbort = () => call.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      async function* bytes(): AsyncGenerator<Buffer> {
        try {
          for await (const m of call as AsyncIterable<TransferChunk>) yield Buffer.from(m.data);
        } catch (err) {
          throw failed(err as grpc.ServiceError);
        } finally {
          signal.removeEventListener("abort", onAbort);
          ch.close();
        }
      }
      return Readable.from(bytes(), { objectMode: false });
    },
  };
}
