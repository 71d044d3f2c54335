/**
 * The operations the delivery ends here instead of sending them: a kind the
 * agent did not announce, and, never sent before, one cancelled meanwhile
 * or one that would start a VM under a generation its placement has left.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, type RpcError, timestampFromMs } from "../core/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  OperationKind,
  OperationOutcome,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import type { AgentOperations } from "./agent-operations.js";
import { checkCapability } from "./agent-presence.js";
import type { AgentSession } from "./agent-session.js";

/** Options of {@link createDeliveryRefusals}. */
export interface DeliveryRefusalsOptions {
  readonly operations: AgentOperations;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
  /**
   * The generation of the VM's placement as this process's copy of the
   * records shows it now (a watch: it may lag, never lead); undefined when
   * not known (no record, or the records not loaded yet).
   */
  readonly placedGeneration: (vmId: string) => bigint | undefined;
}

/** Ends an operation here, before it is sent: true when it is not to be sent. */
export interface DeliveryRefusals {
  refused(session: AgentSession, record: OperationRecord): boolean;
}

/** The kinds that start a VM under their dispatch's generation (its fencing token). */
const STARTS = new Set<OperationKind>([
  OperationKind.START_VM,
  OperationKind.REBOOT_VM,
  OperationKind.RECOVER,
]);

/**
 * An operation of a kind the agent did not name in its Hello ends FAILED
 * with AGENT_CAPABILITY_MISSING. One that no stream was ever given (still
 * PENDING) ends CANCELLED if its cancellation was asked meanwhile (sending
 * it and then the cancel could let the agent act first), and FAILED with
 * STALE_GENERATION if it would start a VM under a generation older than
 * the VM's placement now: it was decided for a placement since left (a
 * start queued for a node cut off during a failover, delivered after the
 * VM was placed back, ran under the old generation and let a late recover
 * elsewhere take the disks: the chaos test's seed 105). An operation sent
 * before, on another stream, may be in the agent's hands: only the agent
 * and its locks decide it.
 */
export function createDeliveryRefusals(options: DeliveryRefusalsOptions): DeliveryRefusals {
  const { operations, clock, signal, logger: log, quiet } = options;

  /** Records the refusal: over any phase for a kind not run, only while PENDING for the others. */
  function end(
    session: AgentSession,
    id: string,
    outcome: OperationOutcome,
    why: Why,
    unsent: boolean,
  ) {
    const result = create(OperationResultSchema, {
      operationId: id,
      outcome,
      reason: why.reason,
      message: why.message,
      finishedAt: timestampFromMs(clock.now()),
    });
    // Sent meanwhile by another process (the stream moved), it runs: its own result comes.
    const written = unsent
      ? operations.abandon(session.nodeId, result, signal)
      : operations.finish(session.nodeId, result, undefined, signal);
    written.catch((err: unknown) =>
      quiet.warn({ err, node: session.nodeId, id }, "refusal not recorded"),
    );
  }

  /** Why an operation never sent is not sent now, if it is not. */
  function unsendable(
    record: OperationRecord,
  ): { outcome: OperationOutcome; why: Why } | undefined {
    if (record.phase !== OperationPhase.PENDING || record.deliveries > 0) return undefined;
    if (record.cancelRequested)
      return {
        outcome: OperationOutcome.CANCELLED,
        why: { reason: "CANCELLED", message: "cancelled before it was sent to the agent" },
      };
    const d = record.dispatch;
    if (d === undefined || d.generation === 0n || !STARTS.has(d.kind)) return undefined;
    const placed = options.placedGeneration(d.vmId);
    if (placed === undefined || placed <= d.generation) return undefined;
    return {
      outcome: OperationOutcome.FAILED,
      why: {
        reason: "STALE_GENERATION",
        message: `decided under generation ${d.generation}; the VM's placement is at ${placed} now: not sent`,
      },
    };
  }

  return {
    refused(session, record) {
      const d = record.dispatch;
      const id = d?.operationId ?? "";
      if (d === undefined) return false;
      try {
        checkCapability(session.capabilities, d.kind, session.nodeId);
      } catch (err) {
        log.warn(
          { node: session.nodeId, id, kind: d.kind },
          "operation the agent does not run refused",
        );
        end(session, id, OperationOutcome.FAILED, err as RpcError, false);
        return true;
      }
      const not = unsendable(record);
      if (not === undefined) return false;
      log.warn(
        { node: session.nodeId, id, vm: d.vmId, kind: d.kind, reason: not.why.reason },
        "operation not sent",
      );
      end(session, id, not.outcome, not.why, true);
      return true;
    },
  };
}

/** A refusal's reason and message, as a result carries them. */
interface Why {
  readonly reason: string;
  readonly message: string;
}
