/**
 * Storage operations on agents: whether a node's agent runs a storage
 * driver, and running one operation there through the store, answered with
 * its result and the StorageReport sent before it. What `createAgentStorage`
 * and `relayedSend` build on.
 */
import { randomUUID } from "node:crypto";
import { REASONS, type Reason, RpcError, timeoutSignal } from "../core/index.js";
import {
  type OperationKind,
  OperationOutcome,
  type OperationResult,
  type StorageReport,
} from "../gen/debvisor/v1/agent_pb.js";
import type { AgentHub } from "./agent-hub.js";

/** What an agent answered to one operation. */
export interface AgentAnswer {
  readonly result: OperationResult;
  /** The StorageReport sent just before the result. */
  readonly report?: StorageReport;
}

/** Options of {@link createAgentStorageCalls}. */
export interface AgentStorageCallsOptions {
  /** The hub, once the daemon has one. */
  readonly hub: () => AgentHub | undefined;
  /** Limit of one operation started by `ask`. */
  readonly timeoutMs: number;
}

/** Storage operations on nodes' agents. */
export interface AgentStorageCalls {
  /** Whether `nodeId` names a node whose connected agent runs a storage driver. */
  runsStorage(nodeId: string | undefined, signal: AbortSignal): Promise<boolean>;
  /** The hub, if `nodeId`'s agent runs storage; else AGENT_NOT_CONNECTED. */
  hubFor(nodeId: string, signal: AbortSignal): Promise<AgentHub>;
  /** Starts an operation on a node's agent; its answer, or its coded failure. */
  start(
    nodeId: string,
    operationId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ): Promise<AgentAnswer>;
  /** `start` under a fresh operation id, bounded by the options' timeoutMs. */
  ask(
    nodeId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ): Promise<AgentAnswer>;
}

/** Who asks, in operation records. */
const REQUESTED_BY = "system:storage";

/**
 * Storage calls through `options.hub()`: an operation is submitted for the
 * node's agent and its finished record awaited; anything but SUCCEEDED
 * rejects with the agent's reason (STORAGE_UNAVAILABLE if it is no known
 * reason), and a call aborted by its signal asks the agent to cancel.
 */
export function createAgentStorageCalls(options: AgentStorageCallsOptions): AgentStorageCalls {
  const { timeoutMs } = options;

  const runsStorage = async (nodeId: string | undefined, signal: AbortSignal) =>
    nodeId !== undefined &&
    ((await options.hub()?.agentCapabilities(nodeId, signal)) ?? []).some((c) =>
      c.startsWith("storage:"),
    );

  const hubFor = async (nodeId: string, signal: AbortSignal): Promise<AgentHub> => {
    const hub = options.hub();
    if (hub === undefined || !(await runsStorage(nodeId, signal)))
      throw new RpcError("AGENT_NOT_CONNECTED", {
        cause: new Error(`no storage agent of ${nodeId} connected`),
      });
    return hub;
  };

  async function start(
    nodeId: string,
    operationId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ): Promise<AgentAnswer> {
    const hub = await hubFor(nodeId, signal);
    return hub.operations
      .submit(
        nodeId,
        {
          operationId,
          kind,
          vmId: "",
          params,
          generation: 0n,
        },
        REQUESTED_BY,
        signal,
      )
      .then(async () => {
        const done = await hub.operations.finished(nodeId, operationId, signal);
        return {
          result: done.result ?? ({ outcome: OperationOutcome.FAILED } as OperationResult),
          report: done.storageReport,
        };
      })
      .then((a: AgentAnswer) => {
        if (a.result.outcome === OperationOutcome.SUCCEEDED) return a;
        const reason = (
          a.result.reason in REASONS ? a.result.reason : "STORAGE_UNAVAILABLE"
        ) as Reason;
        throw new RpcError(reason, { message: a.result.message || undefined });
      })
      .catch((err: unknown) => {
        if (signal.aborted)
          void hub.operations.requestCancel(nodeId, operationId).catch(() => undefined);
        throw err;
      });
  }

  const ask = (
    nodeId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ) => start(nodeId, `st-${randomUUID()}`, kind, params, timeoutSignal(timeoutMs, signal));

  return { runsStorage, hubFor, start, ask };
}
