import { randomUUID } from "node:crypto";
import { Code as ConnectCode, ConnectError } from "@connectrpc/connect";
import {
  createAsyncIterable,
  encodeEnvelope,
  readAllBytes,
  type UniversalHandler,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  createEndStreamSerialization,
  endStreamFlag,
  errorFromJsonBytes,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  setTrailerStatus,
  trailerFlag,
  trailerParse,
  trailerSerialize,
} from "@connectrpc/connect/protocol-grpc-web";
import { type CallContext, Code, type Logger, RpcError } from "../core/index.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";

/**
 * The errors the panel's Connect adapter answers: the pipeline's, and
 * Connect's own refusals, both in the catalogue's terms.
 */

/** The error a browser sees: the catalogue's code, reason and message, never the cause. */
export function toConnectError(error: RpcError, ctx: CallContext): ConnectError {
  const metadata = new Headers({
    "x-request-id": ctx.requestId,
    "debvisor-error-reason": error.reason,
  });
  if (error.retryAfterMs !== undefined) metadata.set("retry-after-ms", String(error.retryAfterMs));
  const message =
    error.code === Code.Internal
      ? `internal error (request id ${ctx.requestId})`
      : error.clientMessage;
  const details =
    error.fieldViolations !== undefined && error.fieldViolations.length > 0
      ? [{ desc: BadRequestSchema, value: { fieldViolations: [...error.fieldViolations] } }]
      : [];
  return new ConnectError(message, error.code as number as ConnectCode, metadata, details);
}

/** Largest refusal of Connect's own that is read to be answered anew. */
const MAX_REFUSAL_BYTES = 64 * 1024;

/**
 * A response Connect made itself, before the pipeline ran (no request id):
 * a request it could not decode, whose message is the decoder's own text
 * ("cannot decode message ... from JSON: ...", or INTERNAL "parse binary:
 * premature EOF"). Answered as the gRPC adapter answers it,
 * REQUEST_MALFORMED with the catalogue's message, the decoder's text only
 * in the log; in each form Connect serves (Connect unary and streaming,
 * gRPC-Web). Other refusals (a wrong content type, a request too large)
 * pass as they are.
 */
export async function answeredByCatalogue(
  h: UniversalHandler,
  res: UniversalServerResponse,
  logger: Logger,
): Promise<UniversalServerResponse> {
  const header = new Headers(res.header);
  if (header.has("x-request-id") || res.body === undefined) return res;
  const type = header.get("content-type") ?? "";
  const form = type.startsWith("application/grpc-web")
    ? "grpc-web"
    : type.startsWith("application/connect+")
      ? "stream"
      : res.status !== 200
        ? "unary"
        : undefined;
  if (form === undefined) return res;
  const bytes =
    res.body instanceof Uint8Array ? res.body : await readAllBytes(res.body, MAX_REFUSAL_BYTES);
  const fallback = new ConnectError("undecodable refusal", ConnectCode.Internal);
  const theirs = header.has("content-encoding")
    ? fallback
    : form === "unary"
      ? errorFromJsonBytes(bytes, undefined, fallback)
      : form === "stream"
        ? errorFromJsonBytes(lastEnvelope(bytes), undefined, fallback)
        : (findTrailerError(trailerParse(lastEnvelope(bytes))) ?? fallback);
  if (theirs.code !== ConnectCode.InvalidArgument && theirs.code !== ConnectCode.Internal)
    return { ...res, body: createAsyncIterable([bytes]) };
  const error = new RpcError("REQUEST_MALFORMED", { cause: theirs });
  const requestId = randomUUID();
  logger.debug(
    { requestId, method: h.requestPath, transport: "connect", reason: error.reason, err: theirs },
    "call failed",
  );
  const ours = new ConnectError(error.clientMessage, error.code as number as ConnectCode);
  const meta = { "x-request-id": requestId, "debvisor-error-reason": error.reason };
  header.delete("content-encoding");
  if (form === "grpc-web") {
    const trailer = new Headers(meta);
    setTrailerStatus(trailer, ours);
    const body = encodeEnvelope(trailerFlag, trailerSerialize(trailer));
    return { status: 200, header, body: createAsyncIterable([body]) };
  }
  if (form === "stream") {
    const end = createEndStreamSerialization(undefined).serialize({
      metadata: new Headers(meta),
      error: ours,
    });
    return { status: 200, header, body: createAsyncIterable([encodeEnvelope(endStreamFlag, end)]) };
  }
  const body = errorToJsonBytes(ours, undefined);
  for (const [k, v] of Object.entries(meta)) header.set(k, v);
  header.set("content-length", String(body.byteLength));
  return { status: codeToHttpStatus(ours.code), header, body: createAsyncIterable([body]) };
}

/** The payload of the last envelope (5-byte prefix: flags, big-endian length) in `bytes`. */
function lastEnvelope(bytes: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let last: Uint8Array = new Uint8Array(0);
  for (let at = 0; at + 5 <= bytes.byteLength; ) {
    const end = at + 5 + view.getUint32(at + 1);
    last = bytes.subarray(at + 5, end);
    at = end;
  }
  return last;
}
