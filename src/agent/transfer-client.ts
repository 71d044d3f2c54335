import { once } from "node:events";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type AgentFiles, openChannel, type RevokedServers } from "../client/index.js";
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
  /**
   * Uploads `bytes` under the upload ticket to the relay at `relay` (default:
   * the process holding this node's stream); resolves with the bytes the target took.
   */
  upload(ticket: string, bytes: Readable, signal: AbortSignal, relay?: string): Promise<number>;
  /** The stream uploaded under the transfer whose download ticket this is (relay as for upload). */
  download(ticket: string, signal: AbortSignal, relay?: string): Readable;
}

/** Options of {@link createTransferClient}. */
export interface TransferClientOptions {
  readonly files: AgentFiles;
  /** The control-plane process holding this node's stream: it relays a transfer that names no relay. */
  readonly server: () => string | undefined;
  /**
   * The name every control-plane process's certificate is checked against
   * (the stream's own setting), relays included; default the address's host.
   */
  readonly tlsServerName?: string;
  /** A relay presenting a revoked server certificate is refused, as the stream's server is. */
  readonly revokedServers?: RevokedServers;
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

/**
 * Creates a {@link TransferClient}; each call opens its own channel with the
 * current certificate, checking the relay's certificate against the cluster
 * CA like the stream's: an address in an operation can only lead the agent
 * to a control-plane process.
 */
export function createTransferClient(options: TransferClientOptions): TransferClient {
  const channel = (relay: string | undefined) => {
    const server = relay !== undefined && relay !== "" ? relay : options.server();
    if (server === undefined)
      throw new RpcError("AGENT_NOT_CONNECTED", { message: "no control-plane stream" });
    return openChannel(
      {
        name: "agent-transfer",
        server,
        caPem: readFileSync(options.files.ca, "utf8"),
        certPem: readFileSync(options.files.cert, "utf8"),
        keyPem: readFileSync(options.files.key, "utf8"),
        tlsServerName: options.tlsServerName,
      },
      {},
      options.revokedServers?.guard(server).verify,
    );
  };
  return {
    async upload(ticket, bytes, signal, relay) {
      const ch = channel(relay);
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
    download(ticket, signal, relay) {
      const ch = channel(relay);
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
