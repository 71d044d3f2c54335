/**
 * The operations the delivery ends here instead of sending them: a kind the
 * agent did not announce, and, never given to a stream, one that would
 * start a VM under a generation its placement has left.
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
  /**
   * Whether this process put the operation on a stream whose delivery is
   * not written yet: its record still reads "never sent", wrongly.
   */
  readonly givenHere: (nodeId: string, operationId: string) => boolean;
}

/** Ends an operation here, before it is sent. */
export interface DeliveryRefusals {
  /**
   * True when it is not to be sent now. `kept` hears of a refusal that did
   * not end it: another process gave it to a stream meanwhile (it is to be
   * offered again as it is now), or the write failed.
   */
  refused(session: AgentSession, record: OperationRecord, kept: (given: boolean) => void): boolean;
}

/**
 * The kinds that start a VM under their dispatch's generation (its fencing
 * token). Not CREATE_VM with `start`: it runs under the VM's first
 * generation, a VM created again gets a higher one, and the disks' locks
 * order them.
 */
const STARTS = new Set<OperationKind>([
  OperationKind.START_VM,
  OperationKind.REBOOT_VM,
  OperationKind.RECOVER,
]);

/**
 * An operation of a kind the agent did not name in its Hello ends FAILED
 * with AGENT_CAPABILITY_MISSING. One that no stream was ever given (still
 * PENDING, delivered nowhere, not on a stream of this process) ends FAILED
 * with STALE_GENERATION if it would start a VM under a generation older
 * than the VM's placement now: it was decided for a placement since left
 * (a start queued for a node cut off during a failover, delivered after the
 * VM was placed back, ran under the old generation and let a late recover
 * elsewhere take the disks: the chaos test's seed 105). Ended only while
 * still PENDING (abandon): one another process gave its stream meanwhile
 * is offered again. One given to a stream before may be in the agent's
 * hands: only the agent and its locks decide it. What is not covered: a
 * process that put it on a stream and died before writing the delivery;
 * its record reads "never sent", and the agent may run it while it is
 * recorded as refused (the locks still order the starts).
 */
export function createDeliveryRefusals(options: DeliveryRefusalsOptions): DeliveryRefusals {
  const { operations, clock, signal, logger: log, quiet } = options;

  /** The refusal's result. */
  const resultOf = (id: string, why: Why) =>
    create(OperationResultSchema, {
      operationId: id,
      outcome: OperationOutcome.FAILED,
      reason: why.reason,
      message: why.message,
      finishedAt: timestampFromMs(clock.now()),
    });

  /** Why an operation never given to a stream is not sent now, if it is not. */
  function stale(record: OperationRecord, node: string): Why | undefined {
    const d = record.dispatch;
    if (d === undefined || d.generation === 0n || !STARTS.has(d.kind)) return undefined;
    if (record.phase !== OperationPhase.PENDING || record.deliveries > 0) return undefined;
    if (options.givenHere(node, d.operationId)) return undefined;
    const placed = options.placedGeneration(d.vmId);
    if (placed === undefined || placed <= d.generation) return undefined;
    return {
      reason: "STALE_GENERATION",
      message: `decided under generation ${d.generation}; the VM's placement is at ${placed} now: not sent`,
    };
  }

  return {
    refused(session, record, kept) {
      const d = record.dispatch;
      const id = d?.operationId ?? "";
      if (d === undefined) return false;
      const node = session.nodeId;
      try {
        checkCapability(session.capabilities, d.kind, node);
      } catch (err) {
        log.warn({ node, id, kind: d.kind }, "operation the agent does not run refused");
        operations
          .finish(node, resultOf(id, err as RpcError), undefined, signal)
          .catch((e: unknown) => quiet.warn({ err: e, node, id }, "refusal not recorded"));
        return true;
      }
      const why = stale(record, node);
      if (why === undefined) return false;
      log.warn({ node, id, vm: d.vmId, kind: d.kind, reason: why.reason }, "operation not sent");
      operations.abandon(node, resultOf(id, why), signal).then(
        (ended) => {
          if (!ended) kept(true);
        },
        (err: unknown) => {
          quiet.warn({ err, node, id }, "refusal not recorded");
          kept(false);
        },
      );
      return true;
    },
  };
}

/** A refusal's reason and message, as a result carries them. */
interface Why {
  readonly reason: string;
  readonly message: string;
}
