/**
 * The changes of agent operations' records once written: delivered,
 * progress, the result, abandoned before delivery and cancel requested.
 * Each is a compare-and-swap of the record that a DONE record declines;
 * deliveries and results of many operations at once share a txn (a CAS
 * batch). Built once by `createAgentOperations`, on the dispatch path:
 * nothing here is allocated per call beyond the change itself.
 */
import { clone, equals } from "@bufbuild/protobuf";
import type { Clock } from "../core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import type {
  OperationDispatch,
  OperationProgress,
  OperationResult,
} from "../gen/debvisor/v1/agent_pb.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";
import { createCasBatch, type KvStore, updateMessage, type Versioned } from "../store/index.js";
import { operationKey } from "./agent-operation-keys.js";
import type { AgentOperations } from "./agent-operations.js";

/** The record changes of {@link AgentOperations} (see there). */
export type AgentOperationWrites = Pick<
  AgentOperations,
  "delivered" | "progress" | "finish" | "abandon" | "requestCancel"
>;

/** Creates the {@link AgentOperationWrites} over `store`. */
export function createAgentOperationWrites(store: KvStore, clock: Clock): AgentOperationWrites {
  // Deliveries and results of many operations at once (a burst) share a txn.
  const batch = createCasBatch(store);
  const change = (
    nodeId: string,
    operationId: string,
    edit: (r: OperationRecord) => boolean,
    signal?: AbortSignal,
    known?: Versioned<OperationRecord>,
  ) => {
    const key = operationKey(nodeId, operationId);
    const next = (current: OperationRecord | undefined) => {
      // Declined only when DONE, which no later version undoes: a `known` record may be used.
      if (current === undefined || current.phase === OperationPhase.DONE) return undefined;
      // A copy: `known` is shared with its watcher (whose dispatch may still be on its way).
      const copy = clone(OperationRecordSchema, current);
      if (!edit(copy)) return undefined;
      copy.updatedAtMs = BigInt(clock.now());
      return copy;
    };
    return known === undefined
      ? updateMessage(store, OperationRecordSchema, key, next, { signal })
      : batch.update(OperationRecordSchema, key, known, next, { signal });
  };

  return {
    async delivered(nodeId, operationId, by, signal, known, refuse) {
      return writtenOf(
        await change(
          nodeId,
          operationId,
          (r) => {
            const refused = r.phase === OperationPhase.PENDING ? refuse?.(r) : undefined;
            if (refused !== undefined) {
              r.phase = OperationPhase.DONE;
              r.result = refused;
              return true;
            }
            if (r.phase === OperationPhase.PENDING) r.phase = OperationPhase.DELIVERED;
            r.deliveries += 1;
            r.deliveredBy = by;
            return true;
          },
          signal,
          known,
        ),
      );
    },
    async progress(nodeId, progress, signal, known) {
      return writtenOf(
        await change(
          nodeId,
          progress.operationId,
          (r) => {
            // Another operation's progress under the same id (see finish): not this one's.
            if (!answers(r.dispatch, progress)) return false;
            r.phase = OperationPhase.RUNNING;
            r.progress = progress;
            return true;
          },
          signal,
          known,
        ),
      );
    },
    async finish(nodeId, result, report, signal, known) {
      const { written } = await change(
        nodeId,
        result.operationId,
        (r) => {
          // Another operation's result under the same id (an earlier one, still running on
          // the node when its record was ended and removed): not this one's.
          if (!answers(r.dispatch, result)) return false;
          r.phase = OperationPhase.DONE;
          r.result = result;
          if (report !== undefined) r.storageReport = report;
          // A used ticket is worth nothing, but it need not stay written either.
          if (r.dispatch?.params.ticket !== undefined) delete r.dispatch.params.ticket;
          return true;
        },
        signal,
        known,
      );
      return written;
    },
    async abandon(nodeId, result, signal) {
      const { written } = await change(
        nodeId,
        result.operationId,
        (r) => {
          if (r.phase !== OperationPhase.PENDING) return false;
          r.phase = OperationPhase.DONE;
          r.result = result;
          return true;
        },
        signal,
      );
      return written;
    },
    async requestCancel(nodeId, operationId, signal) {
      await change(
        nodeId,
        operationId,
        (r) => {
          if (r.cancelRequested) return false;
          r.cancelRequested = true;
          return true;
        },
        signal,
      );
    },
  };
}

/** What a change wrote, with its revision; undefined when it wrote nothing. */
function writtenOf(change: {
  message: OperationRecord | undefined;
  written: boolean;
  modRevision: number;
}): Versioned<OperationRecord> | undefined {
  return change.written && change.message !== undefined
    ? { message: change.message, modRevision: change.modRevision }
    : undefined;
}

/**
 * Whether a result or progress is of the operation `dispatch` was written
 * for: the same time of writing, where the agent said which (older agents
 * do not).
 */
function answers(
  dispatch: OperationDispatch | undefined,
  from: OperationResult | OperationProgress,
): boolean {
  const a = dispatch?.createdAt;
  const b = from.dispatchCreatedAt;
  return a === undefined || b === undefined || equals(TimestampSchema, a, b);
}
