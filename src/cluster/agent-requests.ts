import { RpcError } from "../core/index.js";
import type { OperationResult, StorageReport } from "../gen/debvisor/v1/agent_pb.js";

/** What an agent answered to one operation. */
export interface AgentAnswer {
  readonly result: OperationResult;
  /** The StorageReport sent just before the result, for a storage operation. */
  readonly report?: StorageReport;
}

/**
 * Waiters for operations this process asked of agents whose streams it
 * holds: the hub hands each StorageReport and result to the waiter of its
 * (node, operation). Nothing is kept for operations nobody waits for.
 */
export interface AgentRequests {
  /** Resolves with the operation's result; register before submitting. Aborting rejects CANCELLED. */
  wait(nodeId: string, operationId: string, signal: AbortSignal): Promise<AgentAnswer>;
  report(nodeId: string, report: StorageReport): void;
  settle(nodeId: string, result: OperationResult): void;
}

interface Waiter {
  report?: StorageReport;
  resolve(answer: AgentAnswer): void;
}

/** Creates the in-memory {@link AgentRequests}. */
export function createAgentRequests(): AgentRequests {
  const waiters = new Map<string, Waiter>();
  const key = (node: string, id: string) => `${node}/${id}`;
  return {
    wait(nodeId, operationId, signal) {
      const k = key(nodeId, operationId);
      return new Promise<AgentAnswer>((resolve, reject) => {
        const onAbort = () => {
          waiters.delete(k);
          reject(new RpcError("CANCELLED"));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener("abort", onAbort, { once: true });
        waiters.set(k, {
          resolve: (answer) => {
            signal.removeEventListener("abort", onAbort);
            waiters.delete(k);
            resolve(answer);
          },
        });
      });
    },
    report(nodeId, report) {
      const w = waiters.get(key(nodeId, report.operationId));
      if (w !== undefined) w.report = report;
    },
    settle(nodeId, result) {
      const w = waiters.get(key(nodeId, result.operationId));
      w?.resolve({ result, report: w.report });
    },
  };
}
