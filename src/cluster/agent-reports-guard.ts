import {
  type CallContext,
  createRecencyMap,
  nodeKey,
  principalOf,
  RpcError,
  sameNode,
} from "../core/index.js";
import type { AgentPresence } from "./agent-presence.js";
import type { Inventory } from "./inventory.js";

/**
 * NodeService's refusal of reports for a node whose agent is connected:
 * such a node is reported on the agent's stream only. The unary calls
 * skipped the stream's guard: a stolen node certificate's Heartbeat,
 * stamped ahead, made the agent's own reports read as older and ignored,
 * and showed the node without its VMs, with nothing told to the agent or
 * the operator (an adversarial review, 8 December 2026). Refused
 * (AGENT_REPORTS_NODE) and logged, a line per node a minute; the agent's
 * stream is untouched. Without `presence`, nothing is refused.
 */
export function createAgentReportsGuard(
  inventory: Pick<Inventory, "getNode">,
  presence: AgentPresence | undefined,
): (nodeId: string, ctx: CallContext) => Promise<void> {
  /** When each node's refused report was last logged. */
  const logged = createRecencyMap<string, number>(1000);
  const due = (nodeId: string): boolean => {
    const now = Date.now();
    const last = logged.get(nodeId);
    if (last !== undefined && now - last < 60_000) return false;
    logged.touch(nodeId, now);
    return true;
  };
  return async (nodeId, ctx) => {
    if (presence === undefined || nodeId === "") return;
    // Node ids are one without regard to case, but the presence record is keyed by the id as
    // the agent's certificate spells it: looked up under every spelling that can name it
    // (the call's, lowered, the registered one, the caller's own certificate name).
    const registered = (await inventory.getNode(nodeId, ctx.signal))?.summary.info?.id?.id;
    const caller = principalOf(ctx).id;
    const spellings = new Set(
      [nodeId, nodeKey(nodeId), registered ?? "", sameNode(caller, nodeId) ? caller : ""].filter(
        (id) => id !== "",
      ),
    );
    const found = await Promise.all(
      [...spellings].map(async (id) => (await presence.current(id, ctx.signal)) !== undefined),
    );
    if (!found.includes(true)) return;
    if (due(nodeId))
      ctx.log.warn(
        { node: nodeId, by: caller },
        "a NodeService report for a node whose agent is connected; refused",
      );
    throw new RpcError("AGENT_REPORTS_NODE");
  };
}
