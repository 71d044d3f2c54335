/**
 * An agent's heartbeat on its stream: its report recorded through the
 * inventory (the VMs of the stream's last list when it says vms_unchanged),
 * and the lease renewal confirmed to the agent.
 */
import { type Logger, RpcError } from "../core/index.js";
import type { AgentHeartbeat } from "../gen/debvisor/v1/agent_pb.js";
import type { Health } from "../gen/debvisor/v1/node_pb.js";
import type { AgentSession } from "./agent-session.js";
import type { Inventory } from "./inventory.js";

/**
 * A heartbeat confirmed to its agent, not confirmed (the store did not take
 * it in time: the agent counts toward fencing itself), confirmed with its
 * report refused as from the future, or failed otherwise (the stream ends).
 */
export type HeartbeatOutcome = "confirmed" | "unconfirmed" | "from_future" | "failed";

/** Options of {@link createHeartbeatRecorder}. */
export interface HeartbeatRecorderOptions {
  readonly inventory: Inventory;
  /** The node's liveness TTL, told to agents with each renewal (LeaseRenewed.ttl_ms). */
  readonly livenessTtlMs?: number;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
  /** Told of every heartbeat's outcome, for a metric (the log tells only some). */
  readonly onHeartbeat?: (outcome: HeartbeatOutcome) => void;
}

/** Records the heartbeats of the streams held here. */
export interface HeartbeatRecorder {
  /**
   * Records a heartbeat and confirms the lease renewal to the agent; throws
   * (ending the stream) when it failed other than as not confirmed.
   */
  record(session: AgentSession, beat: AgentHeartbeat, signal: AbortSignal): Promise<void>;
}

/** A node reports only for itself: the report's node id is the stream's. */
export function ownHealth(health: Health | undefined, nodeId: string): Health {
  if (health === undefined) throw new RpcError("INVALID_ARGUMENT", { message: "health: required" });
  return { ...health, nodeId: { $typeName: "debvisor.v1.NodeId", id: nodeId } };
}

/** Builds the hub's heartbeat recorder. */
export function createHeartbeatRecorder(options: HeartbeatRecorderOptions): HeartbeatRecorder {
  const { inventory, quiet } = options;

  /**
   * Records a heartbeat and confirms the lease renewal to the agent. A report
   * from the future renewed the lease all the same (its content is refused):
   * confirmed, and the stream stays. A heartbeat the store did not take (down,
   * or too slow to answer) is not confirmed, and the stream stays too: the
   * next heartbeat tries again, and the agent, counting only confirmed
   * renewals, fences itself if none comes within its window. Closing the
   * stream instead sent every node of an overloaded store to reconnect at
   * once (10,000 streams in the agents benchmark), which loaded it further.
   */
  async function record(
    session: AgentSession,
    beat: AgentHeartbeat,
    signal: AbortSignal,
  ): Promise<void> {
    let outcome: HeartbeatOutcome = "confirmed";
    try {
      await inventory.heartbeat(ownHealth(withVms(session, beat), session.nodeId), signal);
    } catch (err) {
      const reason = err instanceof RpcError ? err.reason : undefined;
      if (reason === "STORE_UNAVAILABLE" && !signal.aborted) {
        options.onHeartbeat?.("unconfirmed");
        quiet.warn({ node: session.nodeId, err }, "agent heartbeat not recorded; not confirmed");
        return;
      }
      if (reason !== "REPORT_FROM_FUTURE") {
        options.onHeartbeat?.("failed");
        throw err;
      }
      outcome = "from_future";
      quiet.warn(
        { node: session.nodeId },
        "agent report from the future refused; its clock is ahead",
      );
    }
    options.onHeartbeat?.(outcome);
    session.queue.push({
      kind: {
        case: "leaseRenewed",
        value: { sequence: beat.sequence, ttlMs: options.livenessTtlMs ?? 0 },
      },
    });
  }

  return { record };
}

/**
 * A heartbeat's report with its VMs: those it lists (then the stream's new
 * last list), or with vms_unchanged those of the stream's last list. An
 * agent that repeats its VMs on every heartbeat costs the daemon their
 * decoding, checking and comparing each time; with vms_unchanged it sends
 * them when they change.
 */
function withVms(session: AgentSession, beat: AgentHeartbeat): Health | undefined {
  const { health } = beat;
  if (!beat.vmsUnchanged || health === undefined) {
    if (health !== undefined) session.vms = health.vms;
    return health;
  }
  if (health.vms.length > 0)
    throw new RpcError("INVALID_ARGUMENT", {
      message: "heartbeat.health.vms: must be empty when vms_unchanged is set",
    });
  return { ...health, vms: session.vms };
}
