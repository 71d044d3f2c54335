// The result an agent writes for an operation: its outcome, the coded error
// it failed with, and the time of writing from the agent's clock.

import { create } from "@bufbuild/protobuf";
import type { RpcError } from "../core/index.js";
import {
  type OperationDispatch,
  type OperationOutcome,
  type OperationResult,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";

/** Builds the result answering `d` (named by its id and its time of writing). */
export type ResultOf = (
  d: OperationDispatch,
  outcome: OperationOutcome,
  err?: RpcError,
  replayed?: boolean,
) => OperationResult;

/**
 * Creates the result builder; results are stamped with `clock.now`, read at
 * each result (a clock-offset fault shifts it). Default Date.now.
 */
export function createResultOf(clock: { now?: () => number }): ResultOf {
  const stamp = () => {
    const ms = (clock.now ?? Date.now)();
    return create(TimestampSchema, {
      seconds: BigInt(Math.floor(ms / 1000)),
      nanos: (ms % 1000) * 1_000_000,
    });
  };
  return (d, outcome, err, replayed = false) =>
    create(OperationResultSchema, {
      operationId: d.operationId,
      dispatchCreatedAt: d.createdAt,
      outcome,
      reason: err?.reason ?? "",
      message: err?.clientMessage ?? "",
      finishedAt: stamp(),
      replayed,
    });
}
