import { create } from "@bufbuild/protobuf";
import type { Clock } from "../core/index.js";
import {
  type EventRecord,
  EventRecordSchema,
  EventSeqRecordSchema,
} from "../gen/debvisor/store/v1/event_records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  keyValueOf,
  LOST,
  MAX_TXN_OPS,
  retryWhileLost,
  type TxnOp,
} from "../store/index.js";

/** Every event key starts with this. */
export const EVENTS_PREFIX = "events/";
const SEQ_KEY = "events/seq";
const LOG = "events/log/";
const BY_OBJECT = "events/by-object/";
/** Events written in one transaction at most (2 puts each, plus the sequence). */
export const MAX_EVENT_BATCH = 20;
/** Old events removed by one write at most (2 deletes each): a lowered maxCount converges over a few writes. */
const MAX_EVICT = Math.floor((MAX_TXN_OPS - 1 - 2 * MAX_EVENT_BATCH) / 2);
const MAX_ATTEMPTS = 8;

/** The kinds of object events are about. */
export type EventObjectKind = "vm" | "node" | "migration" | "replication";

/** An event as stored, with the revision it was recorded at. */
export interface StoredEvent {
  readonly record: EventRecord;
  readonly revision: number;
  /** Its key: the cursor for paging. */
  readonly key: string;
}

/** Which events to read. */
export interface EventFilter {
  /** With `id`: one object's events only. */
  readonly kind?: EventObjectKind;
  readonly id?: string;
}

/** Options of {@link createEventLog}. */
export interface EventLogOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** Events kept at most, across the cluster; the oldest go first. */
  readonly maxCount: number;
  /** Events older than this are removed. */
  readonly maxAgeMs: number;
}

/**
 * The cluster's events in the store. Each event is written twice in one
 * transaction: `events/log/<seq>` (every event in order, for listing and
 * watching the cluster) and `events/by-object/<kind>/<object>/<seq>` (one
 * object's, for `describe`: a range read of its own prefix). The sequence
 * (`events/seq`, compare-and-swap) numbers events across every daemon, so
 * retention by count knows which events fall out without counting: a write
 * that takes the sequence to N removes the events numbered N - maxCount and
 * below, and those older than maxAgeMs, by reading only the head of the log
 * (O(removed), never a scan). Both are range-with-prefix and
 * watch-from-revision, which etcd and SQLite do well.
 */
export interface EventLog {
  /** Writes events (at most {@link MAX_EVENT_BATCH}) and removes what retention says; resolves with the revision. */
  append(records: readonly EventRecord[], signal?: AbortSignal): Promise<number>;
  /** Removes what retention says without writing (age passes while nothing happens). */
  prune(signal?: AbortSignal): Promise<number>;
  /** One page, oldest first, after the key `after`; `revision` is the store's at the read. */
  page(
    filter: EventFilter,
    options: { after?: string; limit: number; signal?: AbortSignal },
  ): Promise<{ events: StoredEvent[]; more: boolean; revision: number }>;
  /** The newest `count` events passing `keep`, oldest first (reads backwards in steps from the sequence). */
  tail(
    filter: EventFilter,
    count: number,
    keep: (e: StoredEvent) => boolean,
    signal?: AbortSignal,
  ): Promise<{ events: StoredEvent[]; revision: number }>;
  /** Events recorded from `fromRevision` on, then live ones, until `signal` aborts. */
  watch(filter: EventFilter, fromRevision: number, signal: AbortSignal): AsyncIterable<StoredEvent>;
  /** Whether `key` is a cursor of this filter's listing (page tokens come from clients). */
  ownsKey(filter: EventFilter, key: string): boolean;
}

/** A sequence number as a key part: fixed width, so keys sort as numbers. */
const seqPart = (n: bigint | number) => n.toString().padStart(20, "0");
/** An object id as a key part: printable, and no `/` to blur prefixes. */
const idPart = (id: string) =>
  encodeURIComponent(id).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );

/** The key prefix an event filter reads. */
function prefixOf(filter: EventFilter): string {
  if (filter.kind !== undefined && filter.id !== undefined && filter.id !== "")
    return `${BY_OBJECT}${filter.kind}/${idPart(filter.id)}/`;
  return LOG;
}

function objectKey(r: EventRecord): string {
  return `${BY_OBJECT}${r.objectKind}/${idPart(r.objectId)}/${seqPart(r.seq)}`;
}

/** Creates the store-backed {@link EventLog}. */
export function createEventLog(options: EventLogOptions): EventLog {
  const { store, clock } = options;
  const decode = (kv: KeyValue): StoredEvent => ({
    record: decodeMessage(EventRecordSchema, kv),
    revision: kv.modRevision,
    key: kv.key,
  });

  /** Head of the log that retention removes, given the sequence after this write. */
  async function evictions(nextSeq: bigint, signal?: AbortSignal): Promise<TxnOp[]> {
    const floor = nextSeq - 1n - BigInt(options.maxCount);
    const oldest = clock.now() - options.maxAgeMs;
    const head = await store.range(LOG, { limit: MAX_EVICT, signal });
    const ops: TxnOp[] = [];
    for (const kv of head.kvs) {
      const r = decodeMessage(EventRecordSchema, kv);
      if (r.seq > floor && Number(r.timeMs) >= oldest) break;
      ops.push({ type: "delete", key: kv.key }, { type: "delete", key: objectKey(r) });
    }
    return ops;
  }

  async function write(records: readonly EventRecord[], signal?: AbortSignal): Promise<number> {
    if (records.length > MAX_EVENT_BATCH) throw new TypeError("event batch too large");
    return retryWhileLost(MAX_ATTEMPTS, async () => {
      const seq = await getMessage(store, EventSeqRecordSchema, SEQ_KEY, { signal });
      const first = seq?.message.next ?? 1n;
      const next = first + BigInt(records.length);
      const evict = await evictions(next, signal);
      if (records.length === 0 && evict.length === 0) return store.revision({ signal });
      const puts: TxnOp[] = records.flatMap((given, i) => {
        const r = create(EventRecordSchema, { ...given, seq: first + BigInt(i) });
        const value = encodeMessage(EventRecordSchema, r);
        return [
          { type: "put" as const, key: LOG + seqPart(r.seq), value },
          { type: "put" as const, key: objectKey(r), value },
        ];
      });
      const txn = await store.txn(
        {
          compares: [{ key: SEQ_KEY, modRevision: seq?.modRevision ?? 0 }],
          success: [
            ...(records.length === 0
              ? []
              : [
                  {
                    type: "put" as const,
                    key: SEQ_KEY,
                    value: encodeMessage(EventSeqRecordSchema, { next }),
                  },
                ]),
            ...puts,
            ...evict,
          ],
        },
        { signal },
      );
      return txn.succeeded ? txn.revision : LOST;
    });
  }

  return {
    append: write,
    prune: (signal) => write([], signal),
    async page(filter, { after, limit, signal }) {
      const r = await store.range(prefixOf(filter), { after, limit, signal });
      return { events: r.kvs.map(decode), more: r.more, revision: r.revision };
    },
    async tail(filter, count, keep, signal) {
      const prefix = prefixOf(filter);
      const seq = await getMessage(store, EventSeqRecordSchema, SEQ_KEY, { signal });
      const end = seq?.message.next ?? 1n;
      // Read backwards in growing windows of the sequence; each window is a
      // forward range read between two keys.
      let out: StoredEvent[] = [];
      let revision = 0;
      let hi = end;
      let step = BigInt(Math.max(64, count * 2));
      while (hi > 1n && out.length < count) {
        const lo = hi - step > 1n ? hi - step : 1n;
        const window: StoredEvent[] = [];
        let after: string | undefined = lo === 1n ? undefined : prefix + seqPart(lo - 1n);
        for (;;) {
          const r = await store.range(prefix, { after, limit: 1000, signal });
          revision ||= r.revision;
          let past = false;
          for (const kv of r.kvs) {
            if (kv.key >= prefix + seqPart(hi)) {
              past = true;
              break;
            }
            const e = decode(kv);
            if (keep(e)) window.push(e);
          }
          if (past || !r.more || r.kvs.length === 0) break;
          after = r.kvs[r.kvs.length - 1]?.key;
        }
        out = [...window, ...out];
        hi = lo;
        step *= 4n;
      }
      if (revision === 0) revision = await store.revision({ signal });
      return { events: out.slice(Math.max(0, out.length - count)), revision };
    },
    async *watch(filter, fromRevision, signal) {
      for await (const ev of store.watch(prefixOf(filter), fromRevision, { signal })) {
        if (ev.type !== "put") continue;
        yield {
          record: decodeMessage(EventRecordSchema, keyValueOf(ev)),
          revision: ev.revision,
          key: ev.key,
        };
      }
    },
    ownsKey(filter, key) {
      return key.startsWith(prefixOf(filter));
    },
  };
}
