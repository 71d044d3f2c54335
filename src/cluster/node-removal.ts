import { RpcError, sameNode } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { LOST, retryWhileLost } from "../store/index.js";
import type { Inventory } from "./inventory.js";

/** Up to five ids, then how many more. */
function listed(ids: readonly string[]): string {
  const more = ids.length > 5 ? ` and ${ids.length - 5} more` : "";
  return ids.slice(0, 5).join(", ") + more;
}

/** Compare-and-delete attempts while heartbeats or cordons keep changing the record. */
const MAX_ATTEMPTS = 4;

/**
 * Removes a node that is drained and gone: cordoned (nothing may be placed
 * on it), NOT_READY (no heartbeat within the TTL), reporting no VMs (unless
 * cordoned out of service: said to be off) and with no managed VM placed on
 * it. It reads the node from the store itself and deletes the record only
 * while it is unchanged, so a heartbeat or a cordon arriving meanwhile is
 * never lost under the delete. Answers with the removed node's last summary.
 */
export async function removeNode(
  inventory: Inventory,
  id: string,
  signal?: AbortSignal,
): Promise<NodeSummary> {
  return retryWhileLost(MAX_ATTEMPTS, async () => {
    const node = await inventory.readNode(id, signal);
    if (node === undefined) throw new RpcError("NODE_NOT_FOUND");
    // Managed VMs placed on it would be left on no node: nothing could start, delete or
    // fail them over, and their ids could not be used again.
    const placed = (
      await inventory.vmRecords.where((rec) => rec.managed && sameNode(rec.nodeId, id))
    ).map((v) => v.rec.id);
    // Out of service, the operator has said the node is off: its last report is not
    // taken for VMs it still holds (one whose record was deleted meanwhile is in it).
    const reported = node.summary.outOfService ? 0 : node.vms.length;
    const why = [
      node.summary.cordoned ? "" : "it is not cordoned (drain it first)",
      node.summary.readiness === NodeReadiness.NOT_READY ? "" : "it is still ready",
      reported === 0 ? "" : `it still reports ${reported} vm(s)`,
      placed.length === 0
        ? ""
        : `vm(s) ${listed(placed)} are placed on it (fail them over or delete them first${
            node.summary.outOfService
              ? ""
              : "; on a node that is off, a delete waits for it until it is cordoned --out-of-service"
          })`,
    ].filter((w) => w !== "");
    if (why.length > 0)
      throw new RpcError("NODE_IN_USE", { message: `${id} cannot be removed: ${why.join("; ")}` });
    return (await inventory.remove(id, node.unchanged, signal)) ? node.summary : LOST;
  });
}
