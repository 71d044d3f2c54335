/**
 * Quiescing a VM on an agent's node: waiting until the node's jobs on it
 * have ended and the node has reported what they left. The `quiesce` of
 * `createAgentDriver`, which settling calls before it decides from reports.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { msFromTimestamp, RpcError, rethrowAborted } from "../core/index.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import type { AgentDriverDeps } from "./agent-driver.js";

/**
 * Resolves once `nodeId` has no open operation on `vmId` and has sent a
 * report made after (received since, its content newer), or at once when
 * the node is gone or not READY with no such job. Fails BACKEND_UNAVAILABLE
 * while a NOT_READY node's job is within `deps.downGraceMs`, or when no
 * newer report came within `deps.reportWaitMs`: the caller looks again later.
 */
export async function agentQuiesce(
  nodeId: string,
  vmId: string,
  signal: AbortSignal,
  { inventory, operations, clock, downGraceMs, reportWaitMs }: AgentDriverDeps,
): Promise<void> {
  // Wait for the node's jobs on the vm to end, then for a report made after. A node
  // that is down with such a job answers nothing yet (the caller tries again), until
  // it has been down for longer than downGraceMs: then it is presumed dead, job and all.
  for (;;) {
    const node = await inventory.getNode(nodeId, signal);
    if (node === undefined) return;
    const open = await operations.open(nodeId, signal);
    const busy = open.some((r) => r.dispatch?.vmId === vmId);
    if (node.summary.readiness !== NodeReadiness.READY) {
      if (busy && Number(node.summary.notReadyForMs) <= downGraceMs)
        throw new RpcError("BACKEND_UNAVAILABLE", {
          message: `${nodeId} has not reported how its job on ${vmId} ended`,
        });
      return;
    }
    if (!busy) break;
    await sleep(250, undefined, { signal }).catch(rethrowAborted(signal));
  }
  // Made after: received after now, and its content newer than the report stored now.
  // A report stamped before the stored one (the node's clock stepped back) renews the
  // node but its content is ignored: the stored list, from before the job, stays.
  const since = clock.now();
  const stamp = msFromTimestamp(
    (await inventory.getNode(nodeId, signal))?.summary.health?.timestamp,
  );
  // Bounded: a node whose clock stays ahead has every report refused, and one whose
  // clock went back has them ignored until its stamps pass the stored one; its list
  // is no answer meanwhile, and the caller (settling) looks again on a later pass.
  for (;;) {
    const node = await inventory.getNode(nodeId, signal);
    if (node === undefined || node.summary.readiness !== NodeReadiness.READY) return;
    if (
      msFromTimestamp(node.summary.lastHeartbeat) > since &&
      msFromTimestamp(node.summary.health?.timestamp) > stamp
    )
      return;
    if (clock.now() - since > reportWaitMs)
      throw new RpcError("BACKEND_UNAVAILABLE", {
        message: `${nodeId} has sent no report whose content is newer than its job on ${vmId}`,
      });
    await sleep(250, undefined, { signal }).catch(rethrowAborted(signal));
  }
}
