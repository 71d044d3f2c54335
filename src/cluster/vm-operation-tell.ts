/**
 * Telling a settled VM lifecycle operation's outcome to the audit trail,
 * at least once. The settle writes its index entry `settled` and `telling`
 * in one transaction; the outcome is told (`onSettled`, which resolves once
 * the trail took the record) and only then is `telling` cleared. A process
 * that dies between the two (killed in a retry pause, or while its trail
 * wrote), or whose trail refused the record, leaves `telling` set: a sweep
 * that finds the entry still unchanged a grace later claims it (a
 * compare-and-swap, so one process of several tells it) and tells it.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "../core/index.js";
import type { OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  type VmOperationIndex,
  VmOperationIndexSchema,
} from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import type { VmOperation } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage, getMessage, type KvStore } from "../store/index.js";
import { vmOperationOf } from "./vm-operations.js";

/** What {@link createVmOperationTell} needs. */
export interface VmOperationTellOptions {
  readonly store: KvStore;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Resolves once the outcome is in the audit trail; a rejection leaves it to be told again. */
  readonly onSettled: (operation: VmOperation, tenant: string) => Promise<void> | void;
}

/** An index entry found `telling` by a sweep, as it was then. */
export interface LeftUntold {
  readonly key: string;
  readonly modRevision: number;
  readonly record: OperationRecord;
}

/** The two ways an outcome is told: by its settle, and by a sweep for one left untold. */
export interface VmOperationTell {
  /**
   * Tells `op`, then clears `telling` on `index` (written at `revision`) unless the
   * entry changed since (a sweep claimed it: the claimer clears it). Never rejects: a
   * failure is logged and leaves the entry to a sweep.
   */
  tell(op: VmOperation, key: string, index: VmOperationIndex, revision: number): Promise<void>;
  /** Claims and tells `left` if its entry is still as the sweep saw it. */
  tellLeftUntold(left: LeftUntold): Promise<void>;
}

/** Creates the tell of a settler (vm-operation-settler.ts) over `options.store`. */
export function createVmOperationTell(options: VmOperationTellOptions): VmOperationTell {
  const { store, logger, signal } = options;

  async function tell(
    op: VmOperation,
    key: string,
    index: VmOperationIndex,
    revision: number,
  ): Promise<void> {
    try {
      await options.onSettled(op, index.tenant);
    } catch (err) {
      logger.error(
        { err, operation: op.id },
        "vm operation not audited; told again by the next sweep",
      );
      return;
    }
    const told = create(VmOperationIndexSchema, { ...index, telling: false });
    try {
      await store.txn(
        {
          compares: [{ key, modRevision: revision }],
          success: [{ type: "put", key, value: encodeMessage(VmOperationIndexSchema, told) }],
        },
        { signal },
      );
    } catch (err) {
      // Told, but still marked: a sweep tells it again (a duplicate, never a loss).
      if (!signal.aborted) logger.warn({ err, operation: op.id }, "vm operation told, not marked");
    }
  }

  async function tellLeftUntold(left: LeftUntold): Promise<void> {
    const got = await getMessage(store, VmOperationIndexSchema, left.key, { signal });
    if (got === undefined || !got.message.telling || got.modRevision !== left.modRevision) return;
    const claimed = create(VmOperationIndexSchema, { ...got.message, settledBy: randomUUID() });
    const txn = await store.txn(
      {
        compares: [{ key: left.key, modRevision: got.modRevision }],
        success: [
          { type: "put", key: left.key, value: encodeMessage(VmOperationIndexSchema, claimed) },
        ],
      },
      { signal },
    );
    if (!txn.succeeded) return; // another process claimed it, or its own settle cleared it
    logger.warn(
      { operation: claimed.operationId },
      "vm operation outcome left untold by its settle; telling it now",
    );
    await tell(vmOperationOf(claimed, left.record), left.key, claimed, txn.revision);
  }

  return { tell, tellLeftUntold };
}
