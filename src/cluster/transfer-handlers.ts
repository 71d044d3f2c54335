import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CallContext, principalOf, RpcError } from "../core/index.js";
import type {
  DownloadTransferRequest,
  TransferChunk,
  TransferChunkSchema,
  TransferReceiptSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import type { TransferRelay } from "./transfer-relay.js";

/**
 * The node a transfer call acts for: the verified client certificate's
 * common name. A ticket is bound to a node, so only that node's
 * certificate can use it; an API key or token never can.
 */
function callerNode(ctx: CallContext): string {
  const principal = principalOf(ctx);
  const cn = ctx.peer.certificate?.commonName ?? "";
  if (principal.method !== "mtls" || cn === "" || cn !== principal.id)
    throw new RpcError("PERMISSION_DENIED", {
      cause: new Error(`a transfer needs a node certificate, not ${principal.method}`),
    });
  return cn;
}

/** AgentService.UploadTransfer and DownloadTransfer over a relay. */
export function createTransferHandlers(relay: TransferRelay) {
  async function* uploadTransfer(
    requests: AsyncIterable<TransferChunk>,
    ctx: CallContext,
  ): AsyncIterable<MessageInitShape<typeof TransferReceiptSchema>> {
    const node = callerNode(ctx);
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done === true || first.value.ticket === "" || first.value.data.length > 0)
      throw new RpcError("INVALID_ARGUMENT", {
        message: "the first message carries the ticket and nothing else",
      });
    async function* data(): AsyncIterable<Uint8Array> {
      for (;;) {
        const next = await it.next();
        if (next.done === true) return;
        if (next.value.ticket !== "")
          throw new RpcError("INVALID_ARGUMENT", {
            message: "only the first message has a ticket",
          });
        if (next.value.data.length > 0) yield next.value.data;
      }
    }
    const bytes = await relay.upload(first.value.ticket, node, data(), ctx.signal);
    yield { bytes: BigInt(bytes) };
  }

  async function* downloadTransfer(
    request: DownloadTransferRequest,
    ctx: CallContext,
  ): AsyncIterable<MessageInitShape<typeof TransferChunkSchema>> {
    const node = callerNode(ctx);
    for await (const data of relay.download(request.ticket, node, ctx.signal)) yield { data };
  }

  return { uploadTransfer, downloadTransfer };
}
