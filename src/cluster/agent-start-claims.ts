/**
 * The first sending of an operation that starts a VM under a generation
 * (its fencing token): its delivery is written before it is sent, in the
 * compare-and-swap that may end it instead, never sent, when the VM's
 * placement has left that generation.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, timestampFromMs } from "../core/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  OperationKind,
  OperationOutcome,
  type OperationResult,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import type { Versioned } from "../store/index.js";
import type { AgentOperations } from "./agent-operations.js";

/** Options of {@link createStartClaims}. */
export interface StartClaimsOptions {
  readonly operations: AgentOperations;
  readonly clock: Clock;
  /** This control-plane process, recorded on deliveries. */
  readonly serverId: string;
  readonly signal: AbortSignal;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
  /**
   * The VM's placement generation as this process's copy of the records
   * shows it now (a watch: it may lag, never lead); undefined when not
   * known (no record, or the records not loaded yet).
   */
  readonly placedGeneration: (vmId: string) => bigint | undefined;
}

/** Claims of the first sending of starts under a generation. */
export interface StartClaims {
  /** Whether sending `record` first needs a claim: a start under a generation, still PENDING. */
  needed(record: OperationRecord): boolean;
  /**
   * Writes its delivery (PENDING becomes DELIVERED), or ends it
   * STALE_GENERATION when, still PENDING, its generation is older than the
   * VM's placement now: the record as written, or undefined (gone, done
   * meanwhile). A failed write is tried again, after a wait that doubles up
   * to 5 s, while `current()`; undefined once it is not.
   */
  claim(
    nodeId: string,
    record: OperationRecord,
    known: Versioned<OperationRecord> | undefined,
    current: () => boolean,
  ): Promise<Versioned<OperationRecord> | undefined>;
}

/**
 * The kinds that start a VM under their dispatch's generation. Not
 * CREATE_VM with `start`: it runs under the VM's first generation, a VM
 * created again gets a higher one, and the disks' locks order them.
 */
const STARTS = new Set<OperationKind>([
  OperationKind.START_VM,
  OperationKind.REBOOT_VM,
  OperationKind.RECOVER,
]);

/**
 * Written before it is sent, a start's record tells whether any stream was
 * given it: still PENDING, none was. One decided for a placement since left
 * (a start queued for a node cut off during a failover, sent after the VM
 * was placed back, ran under the old generation and let a late recover
 * elsewhere take the disks: the chaos test's seed 105) ends there, unsent.
 */
export function createStartClaims(options: StartClaimsOptions): StartClaims {
  const { operations, clock, signal, quiet } = options;

  /** The refusal of a still PENDING start, if its generation is older than the placement's. */
  function stale(pending: OperationRecord): OperationResult | undefined {
    const d = pending.dispatch;
    if (d === undefined) return undefined;
    const placed = options.placedGeneration(d.vmId);
    if (placed === undefined || placed <= d.generation) return undefined;
    return create(OperationResultSchema, {
      operationId: d.operationId,
      outcome: OperationOutcome.FAILED,
      reason: "STALE_GENERATION",
      message: `decided under generation ${d.generation}; the VM's placement is at ${placed} now: not sent`,
      finishedAt: timestampFromMs(clock.now()),
    });
  }

  return {
    needed(record) {
      const d = record.dispatch;
      return (
        d !== undefined &&
        d.generation > 0n &&
        STARTS.has(d.kind) &&
        record.phase === OperationPhase.PENDING
      );
    },
    async claim(nodeId, record, known, current) {
      const id = record.dispatch?.operationId ?? "";
      for (let waitMs = 250; ; waitMs = Math.min(waitMs * 2, 5000)) {
        try {
          return await operations.delivered(nodeId, id, options.serverId, signal, known, stale);
        } catch (err) {
          quiet.warn({ err, node: nodeId, id }, "delivery not recorded; not sent yet");
          known = undefined;
        }
        if (!current()) return undefined;
        // Aborted (the hub stops): nothing more is sent.
        if (!(await sleep(waitMs, true, { signal }).catch(() => false)) || !current())
          return undefined;
      }
    },
  };
}
