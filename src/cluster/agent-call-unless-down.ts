/**
 * An agent operation followed until the agent's answer or until its node is
 * presumed dead with it: NOT_READY for longer than `downGraceMs`. A node that
 * went down with a job (dead, or cut off for good) may never say how it
 * ended, and nothing else finishes an operation its stream took.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { RpcError } from "../core/index.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import type { AgentDriverDeps } from "./agent-driver.js";
import type { AgentCall } from "./agent-operation-call.js";

/**
 * Runs `call` through `deps.call`; fails OPERATION_INTERRUPTED with
 * `interrupted` once the call's node has been NOT_READY for longer than
 * `deps.downGraceMs` before the agent answered (its outcome is then left to
 * what the nodes report later). The call is cancelled then, as on an abort.
 */
export async function callUnlessDown(
  call: AgentCall,
  deps: AgentDriverDeps,
  interrupted: string,
): Promise<void> {
  const done = new AbortController();
  const following = deps.call({ ...call, signal: AbortSignal.any([call.signal, done.signal]) });
  try {
    // Watched until the call ends, whatever ends it (a cancel included): only a
    // node down with the job wins the race against the agent's answer.
    const lost = downWithJob(call.nodeId, done.signal, deps);
    if (await Promise.race([following.then(() => false), lost])) {
      following.catch(() => undefined);
      throw new RpcError("OPERATION_INTERRUPTED", { message: interrupted });
    }
  } finally {
    done.abort();
  }
}

/**
 * Resolves true once `nodeId` has been NOT_READY for longer than
 * downGraceMs (looked at every second), false once `signal` aborts.
 */
async function downWithJob(
  nodeId: string,
  signal: AbortSignal,
  { inventory, downGraceMs }: AgentDriverDeps,
): Promise<boolean> {
  while (!signal.aborted) {
    const node = await inventory.getNode(nodeId, signal).catch(() => undefined);
    if (
      node !== undefined &&
      node.summary.readiness !== NodeReadiness.READY &&
      Number(node.summary.notReadyForMs) > downGraceMs
    )
      return true;
    await sleep(1000, undefined, { signal }).catch(() => undefined);
  }
  return false;
}
