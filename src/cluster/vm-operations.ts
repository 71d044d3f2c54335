import { createHash, randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError, sameNode, timestampFromMs } from "../core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { type VmRecord, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type VmOperationIndex,
  VmOperationIndexSchema,
} from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import { OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import {
  type VmOperation,
  VmOperationKind,
  VmOperationSchema,
  VmOperationState,
} from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  keyValueOf,
  type TxnOp,
} from "../store/index.js";
import { operationKey } from "./agent-operations.js";

/** Key family of the lifecycle's operation index: vm-operations/<id>. */
export const VM_OPERATIONS_PREFIX = "vm-operations/";

/** The agent operation kind that runs each lifecycle kind. */
const AGENT_KIND: Record<VmOperationKind, OperationKind> = {
  [VmOperationKind.UNSPECIFIED]: OperationKind.UNSPECIFIED,
  [VmOperationKind.CREATE]: OperationKind.CREATE_VM,
  [VmOperationKind.START]: OperationKind.START_VM,
  [VmOperationKind.STOP]: OperationKind.STOP_VM,
  [VmOperationKind.REBOOT]: OperationKind.REBOOT_VM,
  [VmOperationKind.DELETE]: OperationKind.DELETE_VM,
};

/**
 * A new operation's id: random, or (with the client's idempotency key)
 * derived from the key, the VM and the caller's tenant scope, so a retried
 * call names the same operation and callers of different scopes never do.
 * `scope` is the tenant a tenant-confined caller acts in (`ctx.tenant`),
 * undefined for a cluster-wide caller, whose ids are derived exactly as
 * before scopes counted (a retry across an upgrade still matches).
 */
export function vmOperationId(vmId: string, requestId: string, scope: string | undefined): string {
  if (requestId === "") return `op-${randomBytes(8).toString("hex")}`;
  // JSON escapes NUL, and neither a VM id nor a key holds one: a scoped input never equals
  // a cluster-wide one (which always holds a NUL), nor another scope's.
  const input =
    scope === undefined ? `${vmId}\0${requestId}` : JSON.stringify([scope, vmId, requestId]);
  return `rq-${createHash("sha256").update(input).digest("hex").slice(0, 24)}`;
}

/**
 * Why a request cannot be answered with the operation its idempotency key
 * already names, or undefined for a true retry. A retry is the same kind of
 * operation on the same VM with the same parameters: those the operation
 * was dispatched with (a create's spec and start flag, a stop's or reboot's
 * force and timeout after its default, a delete's force) and, for a create,
 * the same tenant. Not compared: the node (a retried create is placed
 * again, maybe elsewhere) and who asks (anyone in the scope may retry).
 * The scope itself is part of the id ({@link vmOperationId}). An operation
 * whose record is gone is compared on its kind, VM and tenant only.
 */
export function keyReuse(existing: StoredVmOperation, req: VmOperationRequest): string | undefined {
  const { index, record } = existing;
  const used = `request_id "${req.requestId}" was already used for`;
  if (index.vmId !== req.vmId) return `${used} another VM`;
  const kind = (k: VmOperationKind) => VmOperationKind[k].toLowerCase();
  if (index.kind !== req.kind) return `${used} a ${kind(index.kind)} of ${index.vmId}`;
  const before = record?.dispatch?.params;
  const differ =
    before === undefined
      ? []
      : [...new Set([...Object.keys(before), ...Object.keys(req.params)])].filter(
          (k) => before[k] !== req.params[k],
        );
  if (req.kind === VmOperationKind.CREATE && index.tenant !== req.tenant) differ.push("tenant");
  return differ.length === 0
    ? undefined
    : `${used} a ${kind(index.kind)} of ${index.vmId} with other parameters (${differ.sort().join(", ")})`;
}

/** A lifecycle operation to write. */
export interface VmOperationRequest {
  /** From {@link vmOperationId}. */
  readonly id: string;
  readonly kind: VmOperationKind;
  readonly vmId: string;
  readonly nodeId: string;
  readonly tenant: string;
  readonly params: Record<string, string>;
  readonly requestedBy: string;
  /** The client's idempotency key ("" none): see {@link vmOperationId} and {@link keyReuse}. */
  readonly requestId: string;
  /** The VM's record as it must be written with the operation, compared on `vmRevision`. */
  readonly vm: VmRecord | undefined;
  readonly vmRevision: number;
  /**
   * The fencing token the operation carries: the VM's placement generation
   * when the operation goes to the node the VM is placed on, else 0 (a start
   * elsewhere is unfenced, and refused where another node holds the disks).
   */
  readonly generation: bigint;
  /** More to compare and write in the same transaction (a create's capacity reservation and disk claims). */
  readonly also?: readonly { readonly compare: Compare; readonly op: TxnOp }[];
  /**
   * Set: the control plane decides the operation as it writes it (DONE,
   * SUCCEEDED, with this message) and no node is asked: a delete of a VM
   * whose node the operator has said is off, or that is gone.
   */
  readonly decided?: { readonly message: string };
  /**
   * More to compare in the same transaction: that no migration or failover
   * of the VM holds its lock, and that a decided delete's node is still off.
   */
  readonly compares?: readonly Compare[];
}

/** One lifecycle operation as stored: its index and the agent operation. */
export interface StoredVmOperation {
  readonly index: VmOperationIndex;
  readonly record: OperationRecord | undefined;
}

/**
 * Lifecycle operations: each is an agent operation (operations/<node>/<id>,
 * run by whoever serves the node) plus an index entry (vm-operations/<id>)
 * that finds it by id and says whose it is. Both are written in one
 * transaction with the change to the VM's record that the call makes.
 */
export interface VmOperations {
  /**
   * Writes the operation; CONFLICT when the VM's record changed meanwhile
   * (the caller reads again). A request id already used answers that operation
   * for a true retry; any other request reusing it is refused INVALID_ARGUMENT,
   * nothing written ({@link keyReuse}).
   */
  submit(
    req: VmOperationRequest,
    signal?: AbortSignal,
  ): Promise<{ operation: VmOperation; revision: number; written: boolean }>;
  get(operationId: string, signal?: AbortSignal): Promise<StoredVmOperation | undefined>;
  /**
   * Whether the operation waits for `nodeId` or runs there: it has no
   * outcome yet and was written for that node. An id the store does not
   * hold (none, "", removed after its retention) is not in flight, nor one
   * left on a node the VM was failed over from (its generation is stale
   * there: the node refuses it when it is back).
   */
  inFlight(operationId: string, nodeId: string, signal?: AbortSignal): Promise<boolean>;
  /** The operation now, then at each change until it is done. */
  follow(operationId: string, signal: AbortSignal): AsyncIterable<VmOperation>;
}

/** Creates the lifecycle operations over `store`. */
export function createVmOperations(store: KvStore, clock: Clock): VmOperations {
  const indexKey = (id: string) => `${VM_OPERATIONS_PREFIX}${id}`;
  const get = async (id: string, signal?: AbortSignal) => {
    const index = (await getMessage(store, VmOperationIndexSchema, indexKey(id), { signal }))
      ?.message;
    if (index === undefined) return undefined;
    const record = (
      await getMessage(store, OperationRecordSchema, operationKey(index.nodeId, id), { signal })
    )?.message;
    return { index, record };
  };
  return {
    get,
    async inFlight(id, nodeId, signal) {
      if (id === "") return false;
      const got = await get(id, signal);
      return (
        got?.record !== undefined &&
        got.record.phase !== OperationPhase.DONE &&
        sameNode(got.index.nodeId, nodeId)
      );
    },
    async submit(req, signal) {
      const { id } = req;
      const now = clock.now();
      const index = create(VmOperationIndexSchema, {
        operationId: id,
        nodeId: req.nodeId,
        vmId: req.vmId,
        tenant: req.tenant,
        kind: req.kind,
      });
      const record = create(OperationRecordSchema, {
        dispatch: {
          operationId: id,
          kind: AGENT_KIND[req.kind],
          vmId: req.vmId,
          params: req.params,
          generation: req.generation,
          createdAt: timestampFromMs(now),
        },
        nodeId: req.nodeId,
        phase: req.decided === undefined ? OperationPhase.PENDING : OperationPhase.DONE,
        result:
          req.decided === undefined
            ? undefined
            : {
                operationId: id,
                outcome: OperationOutcome.SUCCEEDED,
                message: req.decided.message,
                finishedAt: timestampFromMs(now),
              },
        requestedBy: req.requestedBy,
        createdAtMs: BigInt(now),
        updatedAtMs: BigInt(now),
      });
      const vmKey = `vms/${req.vmId}`;
      const compares: Compare[] = [
        { key: indexKey(id), modRevision: 0 },
        { key: operationKey(req.nodeId, id), modRevision: 0 },
      ];
      const success: TxnOp[] = [
        { type: "put", key: indexKey(id), value: encodeMessage(VmOperationIndexSchema, index) },
        {
          type: "put",
          key: operationKey(req.nodeId, id),
          value: encodeMessage(OperationRecordSchema, record),
        },
      ];
      if (req.vm !== undefined) {
        compares.push({ key: vmKey, modRevision: req.vmRevision });
        success.push({ type: "put", key: vmKey, value: encodeMessage(VmRecordSchema, req.vm) });
      }
      compares.push(...(req.compares ?? []));
      for (const more of req.also ?? []) {
        compares.push(more.compare);
        success.push(more.op);
      }
      const txn = await store.txn({ compares, success }, { signal });
      if (txn.succeeded)
        return { operation: vmOperationOf(index, record), revision: txn.revision, written: true };
      const existing = await get(id, signal);
      if (existing !== undefined && req.requestId !== "") {
        const reuse = keyReuse(existing, req);
        if (reuse !== undefined) throw new RpcError("INVALID_ARGUMENT", { message: reuse });
        return {
          operation: vmOperationOf(existing.index, existing.record),
          revision: txn.revision,
          written: false,
        };
      }
      throw new RpcError("CONFLICT");
    },
    async *follow(id, signal) {
      const first = await get(id, signal);
      if (first === undefined) throw new RpcError("OPERATION_NOT_FOUND");
      const key = operationKey(first.index.nodeId, id);
      const from = await store.revision({ signal });
      // Read again after taking the revision, so no change falls between the read and the watch.
      const now = (await get(id, signal)) ?? first;
      let last = vmOperationOf(now.index, now.record);
      yield last;
      if (done(last)) return;
      for await (const e of store.watch(key, from + 1, { signal })) {
        if (e.key !== key || e.type !== "put") continue;
        const next = vmOperationOf(
          first.index,
          decodeMessage(OperationRecordSchema, keyValueOf(e)),
        );
        if (next.state === last.state && next.percent === last.percent && next.phase === last.phase)
          continue;
        last = next;
        yield next;
        if (done(next)) return;
      }
    },
  };
}

/** True once an operation has its outcome. */
export function done(op: VmOperation): boolean {
  return (
    op.state === VmOperationState.SUCCEEDED ||
    op.state === VmOperationState.FAILED ||
    op.state === VmOperationState.CANCELLED
  );
}

/** The API's view of a stored operation. */
export function vmOperationOf(
  index: VmOperationIndex,
  record: OperationRecord | undefined,
): VmOperation {
  const result = record?.result;
  const state =
    record === undefined
      ? VmOperationState.PENDING
      : record.phase === OperationPhase.DONE
        ? result?.outcome === OperationOutcome.SUCCEEDED
          ? VmOperationState.SUCCEEDED
          : result?.outcome === OperationOutcome.CANCELLED
            ? VmOperationState.CANCELLED
            : VmOperationState.FAILED
        : record.phase === OperationPhase.RUNNING
          ? VmOperationState.RUNNING
          : VmOperationState.PENDING;
  const finished = state !== VmOperationState.PENDING && state !== VmOperationState.RUNNING;
  return create(VmOperationSchema, {
    id: index.operationId,
    kind: index.kind,
    vmId: index.vmId,
    nodeId: { id: index.nodeId },
    state,
    percent: finished ? 100 : (record?.progress?.percent ?? 0),
    phase: finished ? "done" : (record?.progress?.phase ?? "pending"),
    message: result?.message ?? "",
    reason: result?.reason ?? "",
    requestedBy: record?.requestedBy ?? "",
    createdAt: timestampFromMs(Number(record?.createdAtMs ?? 0n)),
    updatedAt: timestampFromMs(Number(record?.updatedAtMs ?? 0n)),
  });
}
