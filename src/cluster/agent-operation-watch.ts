import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import {
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { decodeMessage, type KvStore, keyValueOf } from "../store/index.js";
import { OPERATIONS_PREFIX } from "./agent-operations.js";

/** Options of {@link watchOperations}. */
export interface OperationWatchOptions {
  readonly store: KvStore;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Every operation record written from the start on (new, delivered, progress, done), with its revision. */
  onRecord(record: OperationRecord, modRevision: number): void;
  /** The watch was lost and resumed from now: re-read what the streams need. */
  onResync(): void;
}

/**
 * One watch on the operations key family for the whole process, so a
 * thousand streams cost one watch, not a thousand. Records are not kept in
 * memory: each event is routed and dropped. When the watch fails (store
 * restarted, history compacted) it starts again from the current revision
 * and asks for a resync, since events may have been missed meanwhile.
 */
export function watchOperations(options: OperationWatchOptions): { ready: Promise<void> } {
  const { store, signal, logger } = options;
  let started: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    started = resolve;
  });
  const follow = async () => {
    let first = true;
    while (!signal.aborted) {
      try {
        const from = (await store.revision({ signal })) + 1;
        if (first) started();
        else options.onResync();
        first = false;
        for await (const e of store.watch(OPERATIONS_PREFIX, from, { signal })) {
          if (e.type !== "put") continue;
          let record: OperationRecord;
          try {
            record = decodeMessage(OperationRecordSchema, keyValueOf(e));
          } catch (err) {
            logger.error({ err, key: e.key }, "undecodable operation record skipped");
            continue;
          }
          options.onRecord(record, e.revision);
        }
      } catch (err) {
        if (signal.aborted) break;
        logger.warn({ err }, "operations watch ended; resuming");
        await sleep(1000, undefined, { signal, ref: false }).catch(() => {});
      }
    }
    started();
  };
  void follow();
  return { ready };
}

/**
 * {@link watchOperations} for a consumer that must also see what was
 * written while it was not watching: `sweep` runs once the watch is up and
 * again after every resync; `ready` resolves after the first sweep.
 */
export function watchOperationsWithSweep(
  options: Omit<OperationWatchOptions, "onResync"> & { sweep(): Promise<void> },
): { ready: Promise<void> } {
  const sweep = () =>
    options.sweep().catch((err: unknown) => {
      if (!options.signal.aborted) options.logger.warn({ err }, "operations sweep failed");
    });
  const watching = watchOperations({ ...options, onResync: () => void sweep() });
  return { ready: watching.ready.then(sweep) };
}
