import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import { createVmLanes } from "../drivers/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  type VmOperationIndex,
  VmOperationIndexSchema,
} from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
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
import { createVmOperationTell, TELLING_PREFIX } from "./vm-operation-tell.js";
import { VM_OPERATIONS_PREFIX } from "./vm-operations.js";
import type { VmRecords } from "./vm-records.js";

/** Settles tried per finished operation while their txn loses a race (each round one wins). */
const SETTLE_ATTEMPTS = 16;
/** What a settle that lost every round ends with: not ended. */
const notEnded = () => false;
/** The pause before a settle whose store call failed is tried again. */
const STORE_RETRY_PAUSE_MS = 1000;
/**
 * How often the outcomes being told are scanned; one unchanged at two scans in a row is
 * told by the scan. A settle under way tells within milliseconds, its trail's write included.
 */
const TELL_SCAN_MS = 30_000;

/** Options of {@link startVmOperationSettler}. */
export interface VmOperationSettlerOptions {
  readonly store: KvStore;
  readonly vmRecords: VmRecords;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /**
   * Told once per finished operation, cluster-wide (for the audit trail), more than once
   * only if a process dies or a store call fails between telling and marking it told.
   * Resolves once the trail took the record; a rejection leaves it for a scan.
   */
  readonly onSettled: (operation: VmOperation, tenant: string) => Promise<void> | void;
  /** {@link TELL_SCAN_MS} unless set (tests). */
  readonly tellScanMs?: number;
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

  /** Finished operations not settled yet (this process was down when they finished). */
  async function sweep(): Promise<void> {
    for await (const kv of rangeAll(store, VM_OPERATIONS_PREFIX, { signal })) {
      let index: VmOperationIndex;
      try {
        index = decodeMessage(VmOperationIndexSchema, kv);
      } catch (err) {
        // Left for an operator (as retention leaves it): it held every entry after it unsettled.
        logger.warn({ err, key: kv.key }, "vm operation index entry unreadable; passed over");
        continue;
      }
      if (index.settled) continue;
      const rec = await getMessage(
        store,
        OperationRecordSchema,
        operationKey(index.nodeId, index.operationId),
        { signal },
      );
      if (rec !== undefined) await run(rec.message);
    }
  }

  void scanUntold();
  /**
   * Outcomes left untold (their settle's process died, or its trail refused the record):
   * every {@link TELL_SCAN_MS} the markers are read, and one unchanged since the last scan
   * is told, outside the lanes (a trail that hangs holds no settle).
   */
  async function scanUntold(): Promise<void> {
    let seen = new Map<string, number>();
    while (!signal.aborted) {
      await sleep(options.tellScanMs ?? TELL_SCAN_MS, undefined, { signal, ref: false }).catch(
        () => {},
      );
      const next = new Map<string, number>();
      try {
        for await (const kv of rangeAll(store, TELLING_PREFIX, { signal })) {
          const id = kv.key.slice(TELLING_PREFIX.length);
          // One that fails (its entry or record undecodable, a store call) is passed over,
          // not every one after it.
          const revision = await told.tellLeftUntold(id, seen.get(id)).catch((err: unknown) => {
            if (!signal.aborted)
              logger.warn({ err, operation: id }, "untold vm operation not told");
            return seen.get(id);
          });
          if (revision !== undefined) next.set(id, revision);
        }
      } catch (err) {
        if (!signal.aborted) logger.warn({ err }, "untold vm operations not scanned; next scan");
      }
      seen = next;
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
