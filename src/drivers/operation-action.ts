// What each operation kind does on the node: the lifecycle actions, a
// migration with its progress, failover, and storage operations handed to
// the agent's storage.

import { RpcError } from "../core/index.js";
import { type OperationDispatch, OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { type FailoverDeps, recoverHere, removeStaleCopy } from "./failover-actions.js";
import type { MigrationProgress } from "./hypervisor-driver.js";
import {
  type ActionProgress,
  createDomain,
  deleteDomain,
  stopGracefully,
} from "./lifecycle-actions.js";
import type { Send } from "./operation-executor.js";
import { formatTransfer } from "./operation-params.js";
import { isStorageOperation } from "./storage-params.js";

/** Does what `d` asks, under `signal`, reporting `progress`. */
export type OperationAction = (
  d: OperationDispatch,
  signal: AbortSignal,
  progress: ActionProgress,
) => Promise<void>;

/** What the actions use: the executor's options, passed once. */
export interface OperationActionDeps extends FailoverDeps {
  readonly send: Send;
  /** Runs storage operations (OperationKind 20-29), when the agent has storage. */
  readonly storage?: (dispatch: OperationDispatch, signal: AbortSignal) => Promise<void>;
}

/** Creates the action that runs each operation kind over `deps.driver`. */
export function createOperationAction(deps: OperationActionDeps): OperationAction {
  const { driver, send } = deps;

  /** Migration progress as operation progress; the figures ride in the message. */
  function report(d: OperationDispatch, p: MigrationProgress): void {
    send({
      kind: {
        case: "progress",
        value: {
          operationId: d.operationId,
          dispatchCreatedAt: d.createdAt,
          percent: Math.max(0, Math.min(100, Math.round(p.percent))),
          phase: p.phase,
          message: formatTransfer(p),
        },
      },
    });
  }

  return async function act(
    d: OperationDispatch,
    signal: AbortSignal,
    progress: ActionProgress,
  ): Promise<void> {
    if (isStorageOperation(d.kind) && deps.storage !== undefined) return deps.storage(d, signal);
    // The fencing token goes to the driver, which checks it as the VM starts.
    const fence = { generation: d.generation };
    switch (d.kind) {
      case OperationKind.START_VM:
        return driver.start(d.vmId, signal, fence);
      case OperationKind.STOP_VM:
        return stopGracefully(driver, d.vmId, d.params, signal, progress);
      case OperationKind.REBOOT_VM:
        await stopGracefully(driver, d.vmId, d.params, signal, progress);
        progress(70, "starting");
        return driver.start(d.vmId, signal, fence);
      case OperationKind.CREATE_VM:
        return createDomain(driver, d.vmId, d.params, signal, progress, fence);
      case OperationKind.DELETE_VM:
        return deleteDomain(driver, d.vmId, d.params, signal, progress, fence);
      case OperationKind.MIGRATE_OUT:
        return driver.migrate(
          d.vmId,
          { nodeId: d.params.destination ?? "", uri: d.params.uri ?? "" },
          {
            live: d.params.live === "true",
            signal,
            onProgress: (p) => report(d, p),
          },
        );
      case OperationKind.RECOVER:
        return recoverHere(deps, d, signal);
      case OperationKind.REMOVE_STALE_COPY:
        return removeStaleCopy(deps, d, signal);
      default:
        throw new RpcError("INVALID_ARGUMENT", { message: "unknown operation kind" });
    }
  };
}
