// The agent's operation executor: takes the control plane's dispatches,
// runs each at most once (the journal remembers them across restarts) and
// answers its result. The parts: operation-action.ts (what each kind does),
// operation-run.ts (lanes, cancel, results), interrupted-operations.ts
// (settling after a restart), operation-result.ts (the result message).

import { equals, type MessageInitShape } from "@bufbuild/protobuf";
import { type Logger, RpcError } from "../core/index.js";
import {
  type AgentMessageSchema,
  type OperationDispatch,
  OperationOutcome,
} from "../gen/debvisor/v1/agent_pb.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { CopyGenerations } from "./copy-generations.js";
import type { HypervisorDriver } from "./hypervisor-driver.js";
import { settleInterrupted } from "./interrupted-operations.js";
import { createOperationAction } from "./operation-action.js";
import type { OperationJournal } from "./operation-journal.js";
import { createResultOf } from "./operation-result.js";
import { createOperationRun } from "./operation-run.js";

/** A message for the control plane; dropped while the stream is down (the server redelivers). */
export type Send = (message: MessageInitShape<typeof AgentMessageSchema>) => void;

/** Runs operations on the node's hypervisor, each at most once. */
export interface OperationExecutor {
  /**
   * Takes a dispatched operation. One already finished answers its recorded
   * result (replayed); one running is not started again.
   */
  dispatch(dispatch: OperationDispatch): void;
  cancel(operationId: string): void;
  /**
   * After a restart: settles operations the journal says were started and
   * not finished, from what the hypervisor shows (a start whose VM runs is
   * done; a start whose VM does not run has not acted and runs now; a
   * reboot or a migration cannot be told apart: a migration whose VM is
   * gone from here has finished, any other is reported OPERATION_INTERRUPTED;
   * a recover whose VM runs here is done, else it runs again).
   */
  recover(): Promise<void>;
  /** Operations running now. */
  running(): number;
}

/** The operation kinds this agent runs, as Hello capabilities. */
export const OPERATION_CAPABILITIES = [
  "op:start-vm",
  "op:stop-vm",
  "op:reboot-vm",
  "op:create-vm",
  "op:delete-vm",
  "op:migrate-out",
  "op:recover",
  "op:remove-stale-copy",
];

/** Creates the executor over a driver and a journal. */
export function createOperationExecutor(options: {
  driver: HypervisorDriver;
  /** Defines a VM from the control plane's view, where the backend can (RECOVER). */
  define?: (info: VmInfo) => void;
  /** The clock results are stamped with (a clock-offset fault shifts it). Default Date.now. */
  now?: () => number;
  journal: OperationJournal;
  send: Send;
  logger: Logger;
  /** Aborted at shutdown: running operations are left to recover() of the next start. */
  signal: AbortSignal;
  /** The generation each copy here was started under (REMOVE_STALE_COPY compares with it). */
  copies?: CopyGenerations;
  /** Runs storage operations (OperationKind 20-29), when the agent has storage. */
  storage?: (dispatch: OperationDispatch, signal: AbortSignal) => Promise<void>;
  /**
   * Awaited before a VM operation's result is sent: the agent reports its
   * domains first, so that when the control plane answers the operation's
   * caller, what it shows of the VM is already what the operation did.
   */
  beforeResult?: () => Promise<void>;
}): OperationExecutor {
  const { journal, send } = options;
  /** The operations running now, by id: shared by dispatch, cancel and the runner. */
  const inflight = new Map<string, AbortController>();
  const result = createResultOf(options);
  const run = createOperationRun({
    ...options,
    inflight,
    act: createOperationAction(options),
    result,
  });

  return {
    dispatch(d) {
      // A redelivery of an operation carries the dispatch as it was written. Another one
      // under a known id is a new operation: the control plane removes finished ones after
      // their retention, and a client's request_id then names a new operation by the same
      // id. Answered from the journal, it would report the old outcome with nothing done.
      const known = journal.get(d.operationId);
      const same = known !== undefined && sameDispatch(known.dispatch, d);
      if (same && known.result !== undefined) {
        send({ kind: { case: "result", value: { ...known.result, replayed: true } } });
        return;
      }
      if (same) return;
      if (inflight.has(d.operationId)) {
        // Another operation under this id still runs here (its record ended and was removed
        // meanwhile): this one is refused rather than answered with that one's outcome.
        send({
          kind: {
            case: "result",
            value: result(
              d,
              OperationOutcome.FAILED,
              new RpcError("CONFLICT", {
                message: `an earlier operation ${d.operationId} still runs on this node; use another request id`,
              }),
            ),
          },
        });
        return;
      }
      journal.begin(d);
      run(d);
    },
    cancel(operationId) {
      inflight.get(operationId)?.abort();
    },
    recover() {
      return settleInterrupted({ ...options, run, result });
    },
    running: () => inflight.size,
  };
}

/**
 * Whether two dispatches are one operation delivered twice: written once,
 * with its time of writing. A journal entry from before dispatches carried
 * it is taken as the same.
 */
function sameDispatch(a: OperationDispatch, b: OperationDispatch): boolean {
  if (a.createdAt === undefined || b.createdAt === undefined) return true;
  return (
    a.kind === b.kind && a.vmId === b.vmId && equals(TimestampSchema, a.createdAt, b.createdAt)
  );
}
