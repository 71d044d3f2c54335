// Runs one dispatched operation to its result: in its VM's lane, cancellable,
// journalled as finished, and answered to the control plane.

import { type Logger, RpcError, toRpcError } from "../core/index.js";
import {
  type OperationDispatch,
  OperationKind,
  OperationOutcome,
  type OperationResult,
} from "../gen/debvisor/v1/agent_pb.js";
import type { CopyGenerations } from "./copy-generations.js";
import type { ActionProgress } from "./lifecycle-actions.js";
import type { OperationAction } from "./operation-action.js";
import type { Send } from "./operation-executor.js";
import type { OperationJournal } from "./operation-journal.js";
import type { ResultOf } from "./operation-result.js";
import { isStorageOperation } from "./storage-params.js";
import { createVmLanes } from "./vm-lanes.js";

/**
 * Runs `d` in its VM's lane (one at a time per VM, in the order
 * dispatched). With `tookEffect` (an operation a previous run of the agent
 * started), that is asked first, in the lane: after the operations ahead
 * of it have run, not before.
 */
export type OperationRun = (d: OperationDispatch, tookEffect?: () => Promise<boolean>) => void;

/** What a run uses: the executor's options and the state it shares with the executor. */
export interface OperationRunDeps {
  readonly journal: OperationJournal;
  readonly send: Send;
  readonly logger: Logger;
  /** Aborted at shutdown: running operations are left to recover() of the next start. */
  readonly signal: AbortSignal;
  /** The generation each copy here was started under. */
  readonly copies?: CopyGenerations;
  /** Awaited before a VM operation's result is sent (see the executor's options). */
  readonly beforeResult?: () => Promise<void>;
  /** The operations running now, by id (shared with the executor). */
  readonly inflight: Map<string, AbortController>;
  readonly act: OperationAction;
  readonly result: ResultOf;
}

/** Creates the runner; operations of one VM run in one lane, storage operations in another. */
export function createOperationRun(deps: OperationRunDeps): OperationRun {
  const { journal, send, logger, inflight, act, result } = deps;
  const lanes = createVmLanes();

  /** Remembers the generation a copy was started under, once the start took effect. */
  function noteStarted(d: OperationDispatch): void {
    const starts = [OperationKind.START_VM, OperationKind.REBOOT_VM, OperationKind.RECOVER];
    const createdRunning = d.kind === OperationKind.CREATE_VM && d.params.start === "true";
    if (starts.includes(d.kind) || createdRunning) deps.copies?.started(d.vmId, d.generation);
  }

  return function run(d: OperationDispatch, tookEffect?: () => Promise<boolean>): void {
    const id = d.operationId;
    const controller = new AbortController();
    const onStop = () => controller.abort();
    deps.signal.addEventListener("abort", onStop, { once: true });
    inflight.set(id, controller);
    const progress: ActionProgress = (percent, phase) =>
      send({
        kind: {
          case: "progress",
          value: { operationId: id, dispatchCreatedAt: d.createdAt, percent, phase },
        },
      });
    progress(0, "started");
    const lane = isStorageOperation(d.kind) ? "" : d.vmId;
    lanes
      .run(lane, async () => {
        if (controller.signal.aborted) throw new RpcError("CANCELLED");
        if (tookEffect !== undefined && (await tookEffect())) {
          logger.info({ operation: id }, "interrupted operation had taken effect");
          return true;
        }
        if (tookEffect !== undefined)
          logger.info({ operation: id }, "interrupted operation had not acted; running it");
        await act(d, controller.signal, progress);
        return false;
      })
      .then(
        (replayed) => {
          if (!replayed) noteStarted(d);
          finish(d, result(d, OperationOutcome.SUCCEEDED, undefined, replayed));
        },
        (err: unknown) => {
          // Shutting down: the journal keeps it started; the next start settles it.
          if (deps.signal.aborted) return;
          const e = toRpcError(err);
          const outcome =
            e.reason === "CANCELLED" ? OperationOutcome.CANCELLED : OperationOutcome.FAILED;
          finish(d, result(d, outcome, e));
        },
      );
    function finish(dd: OperationDispatch, r: OperationResult) {
      deps.signal.removeEventListener("abort", onStop);
      inflight.delete(dd.operationId);
      journal.finish(r);
      logger.info(
        { operation: dd.operationId, vm: dd.vmId, outcome: OperationOutcome[r.outcome] },
        "operation finished",
      );
      const told = () => send({ kind: { case: "result", value: r } });
      if (deps.beforeResult === undefined || isStorageOperation(dd.kind)) told();
      else void deps.beforeResult().then(told, told);
    }
  };
}
