import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  type Logger,
  RpcError,
  throwIfAborted,
  timestampFromMs,
} from "../core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  type OperationKind,
  OperationOutcome,
  type OperationProgress,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import { decodeMessage, type KvStore, keyValueOf } from "../store/index.js";
import { type AgentOperations, operationKey } from "./agent-operations.js";

/** Options of {@link createAgentOperationCaller}. */
export interface AgentOperationCallerOptions {
  readonly store: KvStore;
  readonly operations: AgentOperations;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Who the operations are recorded as requested by. */
  readonly requestedBy: string;
  /** An operation no agent stream has taken after this long is abandoned (BACKEND_UNAVAILABLE). */
  readonly deliveryTimeoutMs: number;
  /** After the caller aborts, how long the agent's own outcome is awaited (it may have finished). */
  readonly cancelGraceMs: number;
  /**
   * The process is stopping: calls still waiting end at once with
   * SHUTTING_DOWN, asking nothing of the agent, whose job goes on.
   */
  readonly closing?: AbortSignal;
}

/** One operation to run on a node's agent. */
export interface AgentCall {
  readonly nodeId: string;
  readonly kind: OperationKind;
  readonly vmId: string;
  readonly params?: Record<string, string>;
  readonly generation?: bigint;
  readonly signal: AbortSignal;
  /** Each new progress the agent reports. */
  readonly onProgress?: (p: OperationProgress) => void;
}

/** Runs operations on agents through the store and awaits their outcome. */
export type AgentOperationCaller = (call: AgentCall) => Promise<void>;

/**
 * Submits an operation (operations/<node>/<id>, delivered by whichever
 * control-plane process holds the node's stream) and follows its record by
 * watch until the agent's result: SUCCEEDED resolves, anything else rejects
 * with the agent's reason. Aborting the call asks the agent to cancel and
 * then waits (up to cancelGraceMs) for what the agent says happened, since
 * a migration past its switchover finishes regardless: the caller learns
 * the truth, not its wish. An operation no agent takes within
 * deliveryTimeoutMs is abandoned (never delivered later). When the process
 * stops (`closing`), waiting calls end with SHUTTING_DOWN and the agent is
 * left to finish: a successor settles what it did.
 */
export function createAgentOperationCaller(o: AgentOperationCallerOptions): AgentOperationCaller {
  const { store, operations, clock, logger } = o;
  let counter = 0;
  const newId = () =>
    `cp-${clock.now().toString(36)}-${(counter++ % 1296).toString(36)}${randomBytes(4).toString("hex")}`;

  return async (call) => {
    throwIfAborted(call.signal);
    const id = newId();
    const { nodeId } = call;
    const follow = new AbortController();
    const from = (await store.revision({ signal: call.signal })) + 1;
    await operations.submit(
      nodeId,
      {
        operationId: id,
        kind: call.kind,
        vmId: call.vmId,
        params: call.params ?? {},
        generation: call.generation ?? 0n,
      },
      o.requestedBy,
      call.signal,
    );
    let abandoned = false;
    const undelivered = setTimeout(() => {
      const r = create(OperationResultSchema, {
        operationId: id,
        outcome: OperationOutcome.FAILED,
        reason: "BACKEND_UNAVAILABLE",
        message: `no agent of ${nodeId} took the operation in time`,
        finishedAt: timestampFromMs(clock.now()),
      });
      operations
        .abandon(nodeId, r)
        .then((done) => {
          abandoned = done;
        })
        .catch((err: unknown) => logger.warn({ err, node: nodeId, id }, "abandon failed"));
    }, o.deliveryTimeoutMs);
    let grace: NodeJS.Timeout | undefined;
    let shuttingDown = false;
    const onClosing = () => {
      shuttingDown = true;
      follow.abort();
    };
    o.closing?.addEventListener("abort", onClosing, { once: true });
    if (o.closing?.aborted) onClosing();
    const onAbort = () => {
      if (shuttingDown) return;
      operations
        .requestCancel(nodeId, id)
        .catch((err: unknown) => logger.warn({ err, node: nodeId, id }, "cancel not recorded"));
      grace = setTimeout(() => follow.abort(), o.cancelGraceMs);
    };
    call.signal.addEventListener("abort", onAbort, { once: true });
    let lastProgress = "";
    try {
      for await (const e of store.watch(operationKey(nodeId, id), from, {
        signal: follow.signal,
      })) {
        if (e.type !== "put") continue;
        const rec: OperationRecord = decodeMessage(OperationRecordSchema, keyValueOf(e));
        if (rec.dispatch?.operationId !== id) continue;
        if (rec.phase !== OperationPhase.PENDING) clearTimeout(undelivered);
        const p = rec.progress;
        if (p !== undefined && call.onProgress !== undefined) {
          const key = `${p.percent}|${p.phase}|${p.message}`;
          if (key !== lastProgress) {
            lastProgress = key;
            call.onProgress(p);
          }
        }
        if (rec.phase !== OperationPhase.DONE) continue;
        const r = rec.result;
        if (r?.outcome === OperationOutcome.SUCCEEDED) return;
        if (r?.outcome === OperationOutcome.CANCELLED || call.signal.aborted)
          throw new RpcError("CANCELLED");
        throw agentError(r?.reason ?? "", r?.message ?? "", nodeId, abandoned);
      }
      throw new RpcError(shuttingDown ? "SHUTTING_DOWN" : "CANCELLED");
    } catch (err) {
      if (shuttingDown) throw new RpcError("SHUTTING_DOWN", { cause: err });
      if (follow.signal.aborted && call.signal.aborted) throw new RpcError("CANCELLED");
      throw err;
    } finally {
      o.closing?.removeEventListener("abort", onClosing);
      clearTimeout(undelivered);
      clearTimeout(grace);
      call.signal.removeEventListener("abort", onAbort);
      follow.abort();
    }
  };
}

/**
 * Reasons an agent's failure keeps; any other is BACKEND_FAILED.
 * COPY_NOT_STALE is the refusal of a stale copy's removal, which the
 * failover controller records (stale-copy-removal.ts): without it here the
 * refusal was never recognised on agent nodes. FENCED (the node not leased
 * again yet, or fenced from the disks) and STALE_GENERATION (a newer
 * placement holds the disks) are refusals that started nothing: as
 * BACKEND_FAILED the HA restore counted them against the VM's restart limit
 * (ha-restore.ts) and callers read a backend failure.
 */
const KNOWN = [
  "VM_NOT_FOUND",
  "COPY_NOT_STALE",
  "FENCED",
  "STALE_GENERATION",
  "MIGRATION_NOT_ALLOWED",
  "MIGRATION_IN_PROGRESS",
  "BACKEND_UNAVAILABLE",
  "BACKEND_TIMEOUT",
  "OPERATION_INTERRUPTED",
] as const;

/** The agent's failure as an RpcError of the catalogue (BACKEND_FAILED for a reason it does not know). */
function agentError(reason: string, message: string, nodeId: string, abandoned: boolean): RpcError {
  const code = abandoned
    ? "BACKEND_UNAVAILABLE"
    : (KNOWN.find((k) => k === reason) ?? "BACKEND_FAILED");
  return new RpcError(code, {
    message: message === "" ? undefined : message,
    cause: new Error(`agent of ${nodeId}: ${reason} ${message}`),
  });
}
