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
  /** Aborted: this consumer stops following (the watch ends with its last consumer). */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Every operation record written from the start on (new, delivered, progress, done), with its revision. */
  onRecord(record: OperationRecord, modRevision: number): void;
  /** The watch was lost and resumed from now: re-read what the streams need. */
  onResync(): void;
}

type Consumer = Pick<OperationWatchOptions, "onRecord" | "onResync" | "logger">;

/** One watch of a store's operations and the consumers it feeds. */
interface Feed {
  readonly consumers: Set<Consumer>;
  readonly ready: Promise<void>;
  readonly stop: AbortController;
}

/** The pause before a lost watch resumes, and before a consumer that failed on a record resyncs. */
const RESUME_PAUSE_MS = 1000;

/** The running feed of each store: one watch per store and process, whoever follows it. */
const feeds = new WeakMap<KvStore, Feed>();

/**
 * Follows every operation record written to `options.store` from now on.
 * Every consumer in the process shares one watch of the store (the agent
 * hub delivering to a thousand streams, the lifecycle settler, the local
 * runner): each record is fetched and decoded once, and routed to each of
 * them. Records are not kept in memory. When the watch fails (store
 * restarted, history compacted) it starts again from the current revision
 * and every consumer is asked to resync, since events may have been missed
 * meanwhile; a consumer that throws on a record is asked to resync alone.
 * `ready` resolves once the watch is up.
 */
export function watchOperations(options: OperationWatchOptions): { ready: Promise<void> } {
  const { store, signal } = options;
  if (signal.aborted) return { ready: Promise.resolve() };
  let feed = feeds.get(store);
  if (feed === undefined || feed.stop.signal.aborted) {
    feed = startFeed(store, options.logger);
    feeds.set(store, feed);
  }
  const consumer: Consumer = {
    onRecord: options.onRecord,
    onResync: options.onResync,
    logger: options.logger,
  };
  const joined = feed;
  joined.consumers.add(consumer);
  signal.addEventListener(
    "abort",
    () => {
      joined.consumers.delete(consumer);
      if (joined.consumers.size > 0) return;
      joined.stop.abort();
      if (feeds.get(store) === joined) feeds.delete(store);
    },
    { once: true },
  );
  return { ready: joined.ready };
}

function startFeed(store: KvStore, logger: Logger): Feed {
  const stop = new AbortController();
  const consumers = new Set<Consumer>();
  let started: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    started = resolve;
  });
  /** Asks `c` to re-read what it follows; one that throws is logged, and neither stops the watch nor the others. */
  const resync = (c: Consumer) => {
    try {
      c.onResync();
    } catch (err) {
      c.logger.error({ err }, "operations consumer failed to resync");
    }
  };
  /** Consumers owed a resync for a record they failed on. */
  const owed = new Set<Consumer>();
  /**
   * Gives a record to each consumer apart. One that throws has missed it, so
   * it is asked to resync, as when the watch is lost: after the same pause,
   * once for all it failed on meanwhile (a resync can read the store once
   * per stream; one that fails on every record must not do that per record).
   */
  const route = (record: OperationRecord, revision: number) => {
    for (const c of [...consumers]) {
      try {
        c.onRecord(record, revision);
      } catch (err) {
        c.logger.error({ err }, "operations consumer failed on a record; it will resync");
        if (owed.has(c)) continue;
        owed.add(c);
        setTimeout(() => {
          owed.delete(c);
          if (!stop.signal.aborted && consumers.has(c)) resync(c);
        }, RESUME_PAUSE_MS).unref();
      }
    }
  };
  const follow = async () => {
    const { signal } = stop;
    let first = true;
    while (!signal.aborted) {
      try {
        const from = (await store.revision({ signal })) + 1;
        if (first) started();
        else for (const c of [...consumers]) resync(c);
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
          route(record, e.revision);
        }
      } catch (err) {
        if (signal.aborted) break;
        logger.warn({ err }, "operations watch ended; resuming");
        await sleep(RESUME_PAUSE_MS, undefined, { signal, ref: false }).catch(() => {});
      }
    }
    started();
  };
  void follow();
  return { consumers, ready, stop };
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
