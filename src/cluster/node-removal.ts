import { RpcError } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { Inventory } from "./inventory.js";

/** Compare-and-delete attempts while heartbeats or cordons keep changing the record. */
const MAX_ATTEMPTS = 4;

/**
 * Removes a node that is drained and gone: cordoned (nothing may be placed
 * on it), NOT_READY (no heartbeat within the TTL) and reporting no VMs. It
 * reads the node from the store itself and deletes the record only while it
 * is unchanged, so a heartbeat or a cordon arriving meanwhile is never lost
 * under the delete. Answers with the removed node's last summary.
 */
export async function removeNode(
  inventory: Inventory,
  id: string,
  signal?: AbortSignal,
): Promise<NodeSummary> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const node = await inventory.readNode(id, signal);
    if (node === undefined) throw new RpcError("NODE_NOT_FOUND");
    const why = [
      node.summary.cordoned ? "" : "it is not cordoned (drain it first)",
      node.summary.readiness === NodeReadiness.NOT_READY ? "" : "it is still ready",
      node.vms.length === 0 ? "" : `it still reports ${node.vms.length} vm(s)`,
    ].filter((w) => w !== "");
    if (why.length > 0)
      throw new RpcError("NODE_IN_USE", { message: `${id} cannot be removed: ${why.join("; ")}` });
    if (await inventory.remove(id, node.unchanged, signal)) return node.summary;
  }
  throw new RpcError("CONFLICT");
}
