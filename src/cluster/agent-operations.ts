import { create } from "@bufbuild/protobuf";
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
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  keyValueOf,
  rangeAll,
  type Versioned,
} from "../store/index.js";
import { OPERATIONS_PREFIX, operationKey } from "./agent-operation-keys.js";
import { createAgentOperationWrites } from "./agent-operation-writes.js";
import { checkCapability, createAgentPresence } from "./agent-presence.js";
import { currentGeneration } from "./vm-placement.js";

export {
  OPERATIONS_PREFIX,
  operationKey,
  parseOperationKey,
  waitingGuardKey,
} from "./agent-operation-keys.js";

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
   * revision, tried before a read. `refuse`, asked of a record still PENDING in the same
   * compare-and-swap, may end it instead (DONE with its result): never sent, then.
   */
  delivered(
    nodeId: string,
    operationId: string,
    by: string,
    signal?: AbortSignal,
    known?: Versioned<OperationRecord>,
    refuse?: (pending: OperationRecord) => OperationResult | undefined,
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
  const writes = createAgentOperationWrites(store, clock);

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
    ...writes,
  };
}
