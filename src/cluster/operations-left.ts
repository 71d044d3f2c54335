import { create } from "@bufbuild/protobuf";
import type { Clock, Logger } from "../core/index.js";
import { timestampFromMs } from "../core/index.js";
import type { OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import type { AgentOperations } from "./agent-operations.js";

/**
 * Ends the open operations of `nodeId` that `matches` accepts, CANCELLED
 * with `message`: nobody will run them (their node was removed, or their
 * VM deleted while its node is off), and each would otherwise wait for
 * good, holding what it reserved (a create's capacity) and keeping anyone
 * following it waiting. Should the node come back with one of them in its
 * journal, its late result is ignored: the first result is the truth.
 * Best effort, after the change that left them is written: each is ended
 * apart, and a failure (of one, or of reading them) is logged, never
 * thrown to a caller whose own change succeeded. Answers how many ended.
 */
export async function endLeftOperations(o: {
  readonly operations: AgentOperations;
  readonly nodeId: string;
  readonly matches: (record: OperationRecord) => boolean;
  readonly message: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
}): Promise<number> {
  let ended = 0;
  let open: OperationRecord[];
  try {
    open = await o.operations.open(o.nodeId, o.signal);
  } catch (err) {
    o.logger.warn({ err, node: o.nodeId }, "operations left open");
    return 0;
  }
  for (const record of open) {
    const operationId = record.dispatch?.operationId ?? "";
    if (operationId === "" || !o.matches(record)) continue;
    const result = create(OperationResultSchema, {
      operationId,
      outcome: OperationOutcome.CANCELLED,
      reason: "CANCELLED",
      message: o.message,
      finishedAt: timestampFromMs(o.clock.now()),
    });
    try {
      if (await o.operations.finish(o.nodeId, result, undefined, o.signal)) ended++;
    } catch (err) {
      o.logger.warn({ err, node: o.nodeId, operation: operationId }, "operation left open");
    }
  }
  return ended;
}
