/**
 * Telling a settled VM lifecycle operation's outcome to the audit trail,
 * at least once. The settle writes its index entry `settled` and `telling`,
 * and a marker key under {@link TELLING_PREFIX}, in one transaction; the
 * outcome is told (`onSettled`, which resolves once the trail took the
 * record) and only then are `telling` cleared and the marker removed. A
 * process that dies between the two (killed in a retry pause, or while its
 * trail wrote), or whose trail refused the record, leaves both: every
 * settler scans the markers (a short list: the outcomes being told) and
 * tells an entry it finds unchanged at two scans in a row, after claiming
 * it with a compare-and-swap (so one process of several tells it).
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "../core/index.js";
import { OperationRecordSchema } from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  type VmOperationIndex,
  VmOperationIndexSchema,
} from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import type { VmOperation } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage, getMessage, type KvStore, type TxnOp } from "../store/index.js";
import { operationKey } from "./agent-operations.js";
import { VM_OPERATIONS_PREFIX, vmOperationOf } from "./vm-operations.js";

/** `vm-operations-telling/<id>`: the operation's outcome is settled and not yet in the trail. */
export const TELLING_PREFIX = "vm-operations-telling/";

/** What {@link createVmOperationTell} needs. */
export interface VmOperationTellOptions {
  readonly store: KvStore;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Resolves once the outcome is in the audit trail; a rejection leaves it to be told again. */
  readonly onSettled: (operation: VmOperation, tenant: string) => Promise<void> | void;
}

/** The two ways an outcome is told: by its settle, and by a scan for one left untold. */
export interface VmOperationTell {
  /** The marker the settle writes in its transaction, with the entry marked `telling`. */
  marker(operationId: string): TxnOp;
  /**
   * Tells `op`, then clears `telling` on `index` (written at `revision`) and removes its
   * marker, unless the entry changed since (a scan claimed it: the claimer clears it).
   * Never rejects: a failure is logged and leaves the entry to a scan.
   */
  tell(op: VmOperation, key: string, index: VmOperationIndex, revision: number): Promise<void>;
  /**
   * Claims and tells the outcome of `operationId` if its entry is still `telling` at
   * `seenRevision` (its mod revision at the previous scan). A marker whose entry is gone or
   * told is removed.
   */
  tellLeftUntold(
    operationId: string,
    seenRevision: number | undefined,
  ): Promise<number | undefined>;
}

/** Creates the tell of a settler (vm-operation-settler.ts) over `options.store`. */
export function createVmOperationTell(options: VmOperationTellOptions): VmOperationTell {
  const { store, logger, signal } = options;
  const marker = (id: string): TxnOp => ({
    type: "put",
    key: TELLING_PREFIX + id,
    value: new Uint8Array(0),
  });

  async function tell(
    op: VmOperation,
    key: string,
    index: VmOperationIndex,
    revision: number,
  ): Promise<void> {
    try {
      await options.onSettled(op, index.tenant);
    } catch (err) {
      logger.error({ err, operation: op.id }, "vm operation not audited; told again by a scan");
      return;
    }
    const told = create(VmOperationIndexSchema, { ...index, telling: false });
    try {
      await store.txn(
        {
          compares: [{ key, modRevision: revision }],
          success: [
            { type: "put", key, value: encodeMessage(VmOperationIndexSchema, told) },
            { type: "delete", key: TELLING_PREFIX + index.operationId },
          ],
        },
        { signal },
      );
    } catch (err) {
      // Told, but still marked: a scan tells it again (a duplicate, never a loss).
      if (!signal.aborted) logger.warn({ err, operation: op.id }, "vm operation told, not marked");
    }
  }

  async function tellLeftUntold(
    id: string,
    seenRevision: number | undefined,
  ): Promise<number | undefined> {
    const key = VM_OPERATIONS_PREFIX + id;
    const got = await getMessage(store, VmOperationIndexSchema, key, { signal });
    if (got === undefined || !got.message.telling) {
      // Told (or its entry removed) by a process that did not remove the marker.
      await store.txn(
        {
          compares: [{ key, modRevision: got?.modRevision ?? 0 }],
          success: [{ type: "delete", key: TELLING_PREFIX + id }],
        },
        { signal },
      );
      return undefined;
    }
    // Seen for the first time, or changed since: its own settle may be telling it now.
    if (got.modRevision !== seenRevision) return got.modRevision;
    const index = got.message;
    const record = await getMessage(
      store,
      OperationRecordSchema,
      operationKey(index.nodeId, index.operationId),
      { signal },
    );
    if (record === undefined) return got.modRevision; // kept by retention while telling
    const claimed = create(VmOperationIndexSchema, { ...index, settledBy: randomUUID() });
    const txn = await store.txn(
      {
        compares: [{ key, modRevision: got.modRevision }],
        success: [{ type: "put", key, value: encodeMessage(VmOperationIndexSchema, claimed) }],
      },
      { signal },
    );
    if (!txn.succeeded) return undefined; // another process claimed it, or its settle cleared it
    logger.warn(
      { operation: id },
      "vm operation outcome left untold by its settle; telling it now",
    );
    await tell(vmOperationOf(claimed, record.message), key, claimed, txn.revision);
    return undefined;
  }

  return { marker, tell, tellLeftUntold };
}
