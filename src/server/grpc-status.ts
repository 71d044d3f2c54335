// How a call's outcome reaches a gRPC client: the trailers every call ends
// with (its request id) and the status an RpcError becomes.

import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { type CallContext, Code, type RpcError } from "../core/index.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";

const REQUEST_ID = "x-request-id";
const ERROR_REASON = "debvisor-error-reason";

/** The trailers of every call: the server's request id. */
export function trailers(ctx: CallContext): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(REQUEST_ID, ctx.requestId);
  return md;
}

/** The status a client sees: the catalogue message, never the cause; INTERNAL carries only the request id. */
export function toStatus(error: RpcError, ctx: CallContext): Partial<grpc.StatusObject> {
  const md = trailers(ctx);
  md.set(ERROR_REASON, error.reason);
  if (error.retryAfterMs !== undefined) md.set("retry-after-ms", String(error.retryAfterMs));
  if (error.fieldViolations !== undefined && error.fieldViolations.length > 0) {
    // The standard rich error model: google.rpc.Status with a BadRequest detail.
    const status = create(StatusSchema, {
      code: error.code,
      message: error.clientMessage,
      details: [
        anyPack(
          BadRequestSchema,
          create(BadRequestSchema, { fieldViolations: [...error.fieldViolations] }),
        ),
      ],
    });
    md.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  }
  const details =
    error.code === Code.Internal
      ? `internal error (request id ${ctx.requestId})`
      : error.clientMessage;
  return { code: error.code as number as grpc.status, details, metadata: md };
}
