// After an agent restart: settles the operations its journal says were
// started and not finished, from what the hypervisor shows.

import { type Logger, RpcError } from "../core/index.js";
import {
  type OperationDispatch,
  OperationKind,
  OperationOutcome,
} from "../gen/debvisor/v1/agent_pb.js";
import type { HypervisorDriver } from "./hypervisor-driver.js";
import type { OperationJournal } from "./operation-journal.js";
import type { ResultOf } from "./operation-result.js";
import type { OperationRun } from "./operation-run.js";
import { isStorageOperation } from "./storage-params.js";

/** What settling uses: the executor's options and its runner and result builder. */
export interface InterruptedOperationsDeps {
  readonly driver: HypervisorDriver;
  readonly journal: OperationJournal;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly run: OperationRun;
  readonly result: ResultOf;
}

/**
 * Settles the journal's unfinished operations (the contract is
 * OperationExecutor.recover): a migration by whether its VM is still here,
 * a reboot or a storage operation as OPERATION_INTERRUPTED, any other run
 * again in its lane unless the hypervisor shows it took effect.
 */
export async function settleInterrupted(deps: InterruptedOperationsDeps): Promise<void> {
  const { driver, journal, logger, run, result } = deps;
  for (const { dispatch: d } of journal.unfinished()) {
    if (d.kind === OperationKind.MIGRATE_OUT) {
      let here = true;
      try {
        here = (await driver.info(d.vmId, deps.signal)) !== undefined;
      } catch (err) {
        logger.warn({ err, operation: d.operationId }, "cannot check an interrupted migration");
      }
      journal.finish(
        here
          ? result(d, OperationOutcome.FAILED, new RpcError("OPERATION_INTERRUPTED"))
          : result(d, OperationOutcome.SUCCEEDED, undefined, true),
      );
      continue;
    }
    // A storage operation cut short (a send, a snapshot) is not guessed at: the control plane runs it again.
    if (d.kind === OperationKind.REBOOT_VM || isStorageOperation(d.kind)) {
      journal.finish(result(d, OperationOutcome.FAILED, new RpcError("OPERATION_INTERRUPTED")));
      continue;
    }
    run(d, () => tookEffect(deps, d));
  }
}

/** Whether an operation a previous run of the agent started had taken effect, from the hypervisor. */
async function tookEffect(deps: InterruptedOperationsDeps, d: OperationDispatch): Promise<boolean> {
  const starts = d.kind === OperationKind.START_VM || d.kind === OperationKind.RECOVER;
  let state: string | undefined;
  let checked = false;
  try {
    state = (await deps.driver.info(d.vmId, deps.signal))?.state;
    checked = true;
  } catch (err) {
    deps.logger.warn({ err, operation: d.operationId }, "cannot check an interrupted operation");
  }
  // A create took effect once the domain is defined, a delete once it is gone.
  if (d.kind === OperationKind.CREATE_VM)
    return state !== undefined && (d.params.start !== "true" || state === "running");
  if (d.kind === OperationKind.DELETE_VM) return checked && state === undefined;
  return state === (starts ? "running" : "stopped");
}
