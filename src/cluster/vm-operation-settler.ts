import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import { createVmLanes } from "../drivers/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import type { VmOperation } from "../gen/debvisor/v1/vm_pb.js";
import {
  decodeMessage,
  getMessage,
  type KvStore,
  LOST,
  rangeAll,
  retryWhileLost,
} from "../store/index.js";
import { watchOperationsWithSweep } from "./agent-operation-watch.js";
import { operationKey } from "./agent-operations.js";
import { createVmOperationSettle } from "./vm-operation-settle.js";
import { createVmOperationTell, type LeftUntold } from "./vm-operation-tell.js";
import { VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import type { VmRecords } from "./vm-records.js";

/** Settles tried per finished operation while their txn loses a race (each round one wins). */
const SETTLE_ATTEMPTS = 16;
/** What a settle that lost every round ends with: not ended. */
const notEnded = () => false;
/** The pause before a settle whose store call failed is tried again. */
const STORE_RETRY_PAUSE_MS = 1000;
/**
 * How long an outcome found untold by a sweep is left to its own settle before the sweep
 * tells it: a settle under way tells within milliseconds, its trail's write included.
 */
const TELL_GRACE_MS = 30_000;

/** Options of {@link startVmOperationSettler}. */
export interface VmOperationSettlerOptions {
  readonly store: KvStore;
  readonly vmRecords: VmRecords;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /**
   * Told once per finished operation, cluster-wide (for the audit trail), more than once
   * only if a process dies or a store call fails between telling and marking it told.
   * Resolves once the trail took the record; a rejection leaves it for the next sweep.
   */
  readonly onSettled: (operation: VmOperation, tenant: string) => Promise<void> | void;
  /** {@link TELL_GRACE_MS} unless set (tests). */
  readonly tellGraceMs?: number;
}

/**
 * Settles finished lifecycle operations exactly once across control-plane
 * processes (a compare-and-swap marks the index entry settled): the outcome
 * goes to `onSettled` (the audit trail), a successful delete (or one its
 * node answers VM_NOT_FOUND) removes the VM's record, and a failed create
 * removes the record it had written, so the id is free again and nothing is
 * shown that no node holds. A create
 * releases the capacity it reserved on its node.
 */
export function startVmOperationSettler(options: VmOperationSettlerOptions): {
  ready: Promise<void>;
} {
  const { store, logger, signal } = options;

  const told = createVmOperationTell(options);
  const settle = createVmOperationSettle(options, told);
  const lanes = createVmLanes();
  /**
   * One node's settles one after another (a lane per node, as the agent keeps per VM): its
   * creates each release from its one reservations key, so settles under way together lose
   * to each other, one winning per round. More of them at once than the attempts (50 creates
   * finishing together on one node) left all after the 16th unsettled, their reservations
   * held for good. In a lane, a round loses only to another daemon's settle.
   */
  const run = (record: OperationRecord) =>
    record.phase === OperationPhase.DONE
      ? lanes.run(record.nodeId, () => attempt(record))
      : Promise.resolve();
  /**
   * Settles `record`, again while its txn loses a race. A finished operation's record sees
   * no further event: a settle given up was left until the next resync, its create's
   * reservation held and its outcome unaudited meanwhile (creates finishing together on one
   * node each release from the same reservations key, in both daemons at once).
   */
  const attempt = async (record: OperationRecord) => {
    const token = randomUUID();
    // A process that is stopping ends its rounds too, and does not warn.
    const ended = await retryWhileLost<boolean>(
      SETTLE_ATTEMPTS,
      async () => {
        try {
          return (await settle(record, token)) || signal.aborted || LOST;
        } catch (err) {
          // A store that failed a call (etcd's leader changed, a call timed out) is asked
          // again after a pause, in the same bound: the operations watch can live through
          // it, and given up, the settle waited for a resync that never came (a review).
          if (signal.aborted) return true;
          logger.warn({ err, node: record.nodeId }, "vm operation not settled; trying again");
          await sleep(STORE_RETRY_PAUSE_MS, undefined, { signal }).catch(() => {});
          return signal.aborted || LOST;
        }
      },
      notEnded,
    );
    if (!ended)
      logger.warn({ node: record.nodeId }, "vm operation not settled; the next sweep retries");
  };

  /**
   * Finished operations not settled yet (this process was down when they finished), and
   * settled ones whose outcome was left untold (told after a grace, if still untold then).
   */
  async function sweep(): Promise<void> {
    const untold: LeftUntold[] = [];
    for await (const kv of rangeAll(store, VM_OPERATIONS_PREFIX, { signal })) {
      const index = decodeMessage(VmOperationIndexSchema, kv);
      if (index.settled && !index.telling) continue;
      const rec = await getMessage(
        store,
        OperationRecordSchema,
        operationKey(index.nodeId, index.operationId),
        { signal },
      );
      if (rec === undefined) continue;
      if (!index.settled) await run(rec.message);
      else untold.push({ key: kv.key, modRevision: kv.modRevision, record: rec.message });
    }
    if (untold.length > 0) void tellLater(untold);
  }

  async function tellLater(untold: readonly LeftUntold[]): Promise<void> {
    await sleep(options.tellGraceMs ?? TELL_GRACE_MS, undefined, { signal, ref: false }).catch(
      () => {},
    );
    for (const left of untold) {
      if (signal.aborted) return;
      await lanes
        .run(left.record.nodeId, () => told.tellLeftUntold(left))
        .catch((err: unknown) => {
          if (!signal.aborted) logger.warn({ err }, "untold vm operation not told; next sweep");
        });
    }
  }

  return watchOperationsWithSweep({
    store,
    signal,
    logger,
    onRecord: (r) => void run(r),
    sweep,
  });
}
