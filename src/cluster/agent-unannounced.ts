/**
 * The refusal, by the holder of a node's stream, of an operation of a kind
 * its agent did not announce: part of the delivery (agent-delivery.ts).
 */
import { type Clock, type Logger, type RpcError, timestampFromMs } from "../core/index.js";
import { OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import type { AgentOperations } from "./agent-operations.js";
import { checkCapability } from "./agent-presence.js";
import type { AgentSession } from "./agent-session.js";

/** What the refusal writes with. */
export interface UnannouncedDeps {
  readonly operations: AgentOperations;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
}

/**
 * An operation of a kind the agent did not name in its Hello is never
 * sent: it ends here, FAILED with AGENT_CAPABILITY_MISSING. True when it
 * was refused.
 */
export function refuseUnannounced(
  deps: UnannouncedDeps,
  session: AgentSession,
  kind: number,
  id: string,
): boolean {
  const { operations, clock, signal, logger: log, quiet } = deps;
  try {
    checkCapability(session.capabilities, kind, session.nodeId);
    return false;
  } catch (err) {
    const refusal = err as RpcError;
    log.warn({ node: session.nodeId, id, kind }, "operation the agent does not run refused");
    operations
      .finish(
        session.nodeId,
        {
          $typeName: "debvisor.v1.OperationResult",
          operationId: id,
          outcome: OperationOutcome.FAILED,
          reason: refusal.reason,
          message: refusal.message,
          finishedAt: timestampFromMs(clock.now()),
          replayed: false,
        },
        undefined,
        signal,
      )
      .catch((e: unknown) =>
        quiet.warn({ err: e, node: session.nodeId, id }, "refusal not recorded"),
      );
    return true;
  }
}
