import { create } from "@bufbuild/protobuf";
import { type Clock, createRecencyMap, type Logger, timeoutSignal } from "../core/index.js";
import { EventRecordSchema } from "../gen/debvisor/store/v1/event_records_pb.js";
import { type EventLog, type EventObjectKind, MAX_EVENT_BATCH } from "./event-log.js";

/** One thing the cluster did, as the code that saw it tells it. */
export interface ClusterEvent {
  readonly kind: EventObjectKind;
  readonly id: string;
  /** CamelCase: Moved, FailoverRefused, NotReady... (the list is in event.proto). */
  readonly type: string;
  /** A machine reason (an error reason), if any. */
  readonly reason?: string;
  readonly message: string;
  readonly warning?: boolean;
  /** Which part of the control plane saw it. */
  readonly source: string;
  /** The object's tenant; undefined: the recorder asks `resolveTenant` (nodes: none). */
  readonly tenant?: string;
}

/**
 * Where code reports what the cluster did. `emit` never throws, never
 * waits and never fails the operation that calls it: the event is queued and
 * written in the background, or dropped (and counted) when the queue is full
 * or the store refuses it.
 */
export interface EventSink {
  emit(event: ClusterEvent): void;
}

/** A sink that records nothing (tests, tools). */
export const NO_EVENTS: EventSink = Object.freeze({ emit: () => undefined });

/** Counters of a recorder, for metrics. */
export interface EventStats {
  readonly recorded: number;
  /** Dropped because the queue was full. */
  readonly droppedQueueFull: number;
  /** Dropped because the store would not take them. */
  readonly droppedStoreError: number;
  /** Not written: the same event for the same object within the repeat window. */
  readonly suppressed: number;
  readonly queued: number;
}

/** The daemon's {@link EventSink}: a bounded queue in front of the {@link EventLog}. */
export interface EventRecorder extends EventSink {
  stats(): EventStats;
  /** Resolves once everything queued so far has been written or dropped. */
  flush(): Promise<void>;
  /** Writes what is queued (bounded by `flush`), then stops. */
  close(): Promise<void>;
}

/** Options of {@link createEventRecorder}. */
export interface EventRecorderOptions {
  readonly log: EventLog;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Events waiting to be written at most; more are dropped (default 1000). */
  readonly queueMax?: number;
  /** The same event (object, type, reason, message) again within this is not written (default 60 s). */
  readonly repeatWindowMs?: number;
  /** How often old events are pruned while none are written (default 60 s). */
  readonly pruneIntervalMs?: number;
  /** The tenant of an object whose emitter did not know it ("" when none). */
  readonly resolveTenant?: (
    kind: EventObjectKind,
    id: string,
    signal: AbortSignal,
  ) => Promise<string>;
}

/** Attempts to write one batch before its events are dropped. */
const WRITE_ATTEMPTS = 3;
/** Remembered recent events for the repeat window, at most. */
const MAX_RECENT = 10_000;

/** Creates an {@link EventRecorder}; its writer runs until `close`. */
export function createEventRecorder(options: EventRecorderOptions): EventRecorder {
  const { log, clock, logger } = options;
  const queueMax = options.queueMax ?? 1000;
  const repeatMs = options.repeatWindowMs ?? 60_000;
  /** Events to write, each with its tenant, resolved when it was emitted (see emit). */
  const queue: { event: ClusterEvent; at: number; tenant: Promise<string> }[] = [];
  const recent = createRecencyMap<string, number>(MAX_RECENT);
  const stop = new AbortController();
  const stats = { recorded: 0, droppedQueueFull: 0, droppedStoreError: 0, suppressed: 0 };
  let writing: Promise<void> | undefined;

  function repeated(e: ClusterEvent, now: number): boolean {
    const key = `${e.kind}\0${e.id}\0${e.type}\0${e.reason ?? ""}\0${e.message}`;
    const last = recent.get(key);
    if (last !== undefined && now - last < repeatMs) return true;
    recent.touch(key, now);
    return false;
  }

  async function tenantOf(e: ClusterEvent): Promise<string> {
    if (e.tenant !== undefined || e.kind === "node") return e.tenant ?? "";
    try {
      return (await options.resolveTenant?.(e.kind, e.id, timeoutSignal(5000, stop.signal))) ?? "";
    } catch {
      return "";
    }
  }

  async function writeBatch(batch: typeof queue): Promise<void> {
    const records = await Promise.all(
      batch.map(async ({ event: e, at, tenant }) =>
        create(EventRecordSchema, {
          timeMs: BigInt(at),
          objectKind: e.kind,
          objectId: e.id,
          type: e.type,
          reason: e.reason ?? "",
          message: e.message,
          warning: e.warning ?? false,
          source: e.source,
          tenant: await tenant,
        }),
      ),
    );
    for (let attempt = 1; ; attempt++) {
      try {
        await log.append(records, stop.signal);
        stats.recorded += records.length;
        return;
      } catch (err) {
        if (attempt >= WRITE_ATTEMPTS || stop.signal.aborted) {
          stats.droppedStoreError += records.length;
          logger.warn({ err, events: records.length }, "events not recorded");
          return;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt).unref());
      }
    }
  }

  function drain(): Promise<void> {
    writing ??= (async () => {
      try {
        while (queue.length > 0) await writeBatch(queue.splice(0, MAX_EVENT_BATCH));
      } finally {
        writing = undefined;
      }
    })();
    return writing;
  }

  const pruner = setInterval(() => {
    if (writing !== undefined) return;
    log.prune(stop.signal).catch((err: unknown) => logger.warn({ err }, "old events not pruned"));
  }, options.pruneIntervalMs ?? 60_000);
  pruner.unref();

  return {
    emit(event) {
      try {
        const now = clock.now();
        if (repeated(event, now)) {
          stats.suppressed++;
          return;
        }
        if (queue.length >= queueMax || stop.signal.aborted) {
          stats.droppedQueueFull++;
          return;
        }
        // Whose it is as of now, not as of the write (batched, retried): a job deleted in
        // between would leave no owner to tell, and its tenant would lose the event.
        queue.push({ event, at: now, tenant: tenantOf(event) });
        // After the caller's synchronous work: a burst is written in batches.
        if (queue.length === 1) queueMicrotask(() => void drain());
      } catch (err) {
        // An event is never worth failing the caller for.
        logger.warn({ err }, "event not queued");
      }
    },
    stats: () => ({ ...stats, queued: queue.length }),
    async flush() {
      while (writing !== undefined || queue.length > 0) await drain();
    },
    async close() {
      clearInterval(pruner);
      await Promise.race([this.flush(), new Promise((r) => setTimeout(r, 5000).unref())]);
      stop.abort();
    },
  };
}
