import { clone, create, equals } from "@bufbuild/protobuf";
import { type Clock, RpcError, timestampFromMs } from "../core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import type {
  OperationDispatch,
  OperationProgress,
  OperationResult,
  StorageReport,
} from "../gen/debvisor/v1/agent_pb.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";
import {
  createCasBatch,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  keyValueOf,
  rangeAll,
  updateMessage,
  type Versioned,
} from "../store/index.js";
import { checkCapability, createAgentPresence } from "./agent-presence.js";
import { currentGeneration } from "./vm-placement.js";

/** Key family of agent operations: operations/<node>/<operation id>. */
export const OPERATIONS_PREFIX = "operations/";

/** The key of one operation. */
export function operationKey(nodeId: string, operationId: string): string {
  return `${OPERATIONS_PREFIX}${nodeId}/${operationId}`;
}

/**
 * The guard of a VM's operations waiting for its node while the node is not
 * ready: written with each one, so that counting them and writing one is a
 * single compare-and-swap (calls at once each counted the same waiting ones).
 * One empty key per VM that ever waited, removed with the VM's record
 * (vm-operation-settler.ts); never under {@link OPERATIONS_PREFIX}.
 */
export function waitingGuardKey(nodeId: string, vmId: string): string {
  return `operations-waiting/${nodeId}/${vmId}`;
}

/** The node and operation ids of an operation key, or undefined for another key. */
export function parseOperationKey(
  key: string,
): { nodeId: string; operationId: string } | undefined {
  if (!key.startsWith(OPERATIONS_PREFIX)) return undefined;
  const rest = key.slice(OPERATIONS_PREFIX.length);
  const slash = rest.indexOf("/");
  if (slash <= 0 || slash === rest.length - 1) return undefined;
  return { nodeId: rest.slice(0, slash), operationId: rest.slice(slash + 1) };
}

/**
 * Operations for node agents, kept in the store so that any control-plane
 * process may accept one and the process holding the node's stream delivers
 * it. Every change is a compare-and-swap on the record; a result is written
 * once and never overwritten.
 */
export interface AgentOperations {
  /**
   * Writes a new PENDING operation (create-if-absent: an id already used
   * for the node answers the existing record, so submitting twice is safe).
   * An operation on a VM carries the VM's current generation (its fencing
   * token) unless the caller gave one. AGENT_CAPABILITY_MISSING, writing
   * nothing, when the node's connected agent did not name the kind in its Hello.
   */
  submit(
    nodeId: string,
    dispatch: Omit<OperationDispatch, "$typeName" | "createdAt">,
    requestedBy: string,
    signal?: AbortSignal,
  ): Promise<OperationRecord>;
  get(
    nodeId: string,
    operationId: string,
    signal?: AbortSignal,
  ): Promise<OperationRecord | undefined>;
  /** The node's operations not DONE, in the order they were submitted (the store's revisions). */
  open(nodeId: string, signal?: AbortSignal): Promise<OperationRecord[]>;
  /**
   * Notes a delivery by `by` (PENDING becomes DELIVERED): the record as written, undefined
   * when it is gone or done. `known` (here and below): the record as last seen with its
   * revision, tried before a read.
   */
  delivered(
    nodeId: string,
    operationId: string,
    by: string,
    signal?: AbortSignal,
    known?: Versioned<OperationRecord>,
  ): Promise<Versioned<OperationRecord> | undefined>;
  /** Records progress (DELIVERED becomes RUNNING): the record as written; ignored once done. */
  progress(
    nodeId: string,
    progress: OperationProgress,
    signal?: AbortSignal,
    known?: Versioned<OperationRecord>,
  ): Promise<Versioned<OperationRecord> | undefined>;
  /**
   * Records the result once (phase DONE), with the StorageReport sent just
   * before it; a transfer ticket in the params is forgotten. A second result
   * for the same operation is ignored (resolves false): the first one is the truth.
   */
  finish(
    nodeId: string,
    result: OperationResult,
    report?: StorageReport,
    signal?: AbortSignal,
    known?: Versioned<OperationRecord>,
  ): Promise<boolean>;
  /** The record once it is DONE, read from the store (whoever holds the stream); CANCELLED when aborted. */
  finished(nodeId: string, operationId: string, signal: AbortSignal): Promise<OperationRecord>;
  /**
   * Ends an operation no stream has taken yet (still PENDING) with `result`,
   * so it is never delivered; false when it was delivered meanwhile (it
   * runs, and its own result will come).
   */
  abandon(nodeId: string, result: OperationResult, signal?: AbortSignal): Promise<boolean>;
  /** Asks for cancellation; the holder of the node's stream sends it on. */
  requestCancel(nodeId: string, operationId: string, signal?: AbortSignal): Promise<void>;
}

/** Creates the operations repository over `store`. */
export function createAgentOperations(store: KvStore, clock: Clock): AgentOperations {
  const presence = createAgentPresence(store);
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
    async submit(nodeId, dispatch, requestedBy, signal) {
      // Both reads at once: a submit waits one store round trip for them, not two.
      const [capabilities, generation] = await Promise.all([
        presence.capabilities(nodeId, signal),
        dispatch.generation === 0n && dispatch.vmId !== ""
          ? currentGeneration(store, dispatch.vmId, signal)
          : dispatch.generation,
      ]);
      if (capabilities !== undefined) checkCapability(capabilities, dispatch.kind, nodeId);
      const now = clock.now();
      const record = create(OperationRecordSchema, {
        dispatch: { ...dispatch, generation, createdAt: timestampFromMs(now) },
        nodeId,
        phase: OperationPhase.PENDING,
        requestedBy,
        createdAtMs: BigInt(now),
        updatedAtMs: BigInt(now),
      });
      const key = operationKey(nodeId, dispatch.operationId);
      const txn = await store.txn(
        {
          compares: [{ key, modRevision: 0 }],
          success: [{ type: "put", key, value: encodeMessage(OperationRecordSchema, record) }],
        },
        { signal },
      );
      if (txn.succeeded) return record;
      const existing = await getMessage(store, OperationRecordSchema, key, { signal });
      if (existing === undefined) throw new RpcError("CONFLICT");
      return existing.message;
    },
    async get(nodeId, operationId, signal) {
      return (
        await getMessage(store, OperationRecordSchema, operationKey(nodeId, operationId), {
          signal,
        })
      )?.message;
    },
    async open(nodeId, signal) {
      const out: { r: OperationRecord; created: number }[] = [];
      for await (const kv of rangeAll(store, `${OPERATIONS_PREFIX}${nodeId}/`, { signal })) {
        const r = decodeMessage(OperationRecordSchema, kv);
        if (r.phase !== OperationPhase.DONE) out.push({ r, created: kv.createRevision });
      }
      // In the order they were submitted (the store's), not by id: a start and a stop of
      // one VM delivered together take effect in that order on the agent.
      return out.sort((a, b) => a.created - b.created).map((o) => o.r);
    },
    async delivered(nodeId, operationId, by, signal, known) {
      return writtenOf(
        await change(
          nodeId,
          operationId,
          (r) => {
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
    async finished(nodeId, operationId, signal) {
      const key = operationKey(nodeId, operationId);
      const from = await store.revision({ signal });
      // Read after taking the revision, so no change falls between the read and the watch.
      const now = await getMessage(store, OperationRecordSchema, key, { signal });
      if (now === undefined) throw new RpcError("OPERATION_NOT_FOUND");
      if (now.message.phase === OperationPhase.DONE) return now.message;
      try {
        for await (const e of store.watch(key, from + 1, { signal })) {
          if (e.key !== key || e.type !== "put") continue;
          const r = decodeMessage(OperationRecordSchema, keyValueOf(e));
          if (r.phase === OperationPhase.DONE) return r;
        }
      } catch (err) {
        if (signal.aborted) throw new RpcError("CANCELLED", { cause: err });
        throw err;
      }
      throw new RpcError(signal.aborted ? "CANCELLED" : "STORAGE_UNAVAILABLE");
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
