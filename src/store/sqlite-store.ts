// The embedded state store: SQLite behind the KvStore contract, composed of
// its file (sqlite-database.ts), batching write queue (sqlite-write-queue.ts),
// write operations (sqlite-apply.ts), watch (sqlite-watch.ts) and leases
// (sqlite-leases.ts).

import { type Clock, type Logger, systemClock } from "../core/index.js";
import type { KvStore, PutOptions, RangeOptions, TxnRequest, TxnResult } from "./kv-store.js";
import { applyOps } from "./sqlite-apply.js";
import {
  openSqliteDatabase,
  prepareSqliteStatements,
  rowToKeyValue,
  type SqliteRow,
} from "./sqlite-database.js";
import { createSqliteLeases } from "./sqlite-leases.js";
import { watchSqlite } from "./sqlite-watch.js";
import { createSqliteWriteQueue, type SqliteStoreState } from "./sqlite-write-queue.js";
import {
  checkKey,
  checkPrefix,
  checkTxn,
  checkValue,
  prefixEnd,
  rangeLimit,
  throwIfAborted,
} from "./store-checks.js";

/** Options of {@link createSqliteStore}. */
export interface SqliteStoreOptions {
  /** Database file; created with its directory's permissions if missing. */
  readonly path: string;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Watch history kept, in revisions (default 100,000); older watches get WATCH_COMPACTED. */
  readonly historyRevisions?: number;
  /** How often expired leases are collected (default 250 ms). */
  readonly leaseSweepMs?: number;
}

/**
 * The embedded backend: one SQLite file in WAL mode with synchronous=FULL,
 * so a write is on stable storage before its promise resolves. Writes that
 * arrive while a batch is being prepared share one SQLite transaction (and
 * one fsync), each still getting its own revision; nothing is acknowledged
 * before the batch commits. Watches are served from an event log kept in the
 * same transaction, so a reader that watches from the revision it read at
 * misses nothing. Leases expire by a timer.
 */
export function createSqliteStore(options: SqliteStoreOptions): KvStore {
  const clock = options.clock ?? systemClock;
  const log = options.logger.child({ store: "sqlite", path: options.path });
  const history = options.historyRevisions ?? 100_000;
  const db = openSqliteDatabase(options.path, log);
  const stmt = prepareSqliteStatements(db);
  const state: SqliteStoreState = {
    revision: Number(stmt.revision.get() ?? 0),
    closed: false,
    watchers: new Set(),
  };
  const writes = createSqliteWriteQueue(db, stmt, log, history, state);
  const enqueue = writes.enqueue;
  const leases = createSqliteLeases({
    stmt,
    clock,
    log,
    state,
    writes,
    sweepMs: options.leaseSweepMs ?? 250,
  });

  return {
    backend: "sqlite",
    async get(key, opts) {
      checkKey(key);
      throwIfAborted(opts);
      const row = stmt.get.get(key) as SqliteRow | undefined;
      return row === undefined ? undefined : rowToKeyValue(row);
    },
    async put(key, value, opts?: PutOptions) {
      checkKey(key);
      checkValue(value);
      return enqueue<number>((rev) => {
        const events = applyOps(stmt, [{ type: "put", key, value, lease: opts?.lease }], rev);
        return { result: rev, events, consumedRevision: true };
      }, opts);
    },
    async delete(key, opts) {
      checkKey(key);
      return enqueue<{ revision: number; deleted: boolean }>((rev) => {
        const events = applyOps(stmt, [{ type: "delete", key }], rev);
        const deleted = events.length > 0;
        return {
          result: { revision: deleted ? rev : rev - 1, deleted },
          events,
          consumedRevision: deleted,
        };
      }, opts);
    },
    async range(prefix, opts?: RangeOptions) {
      checkPrefix(prefix);
      throwIfAborted(opts);
      const limit = rangeLimit(opts?.limit);
      const rows = stmt.range.all(
        prefix,
        prefixEnd(prefix),
        opts?.after ?? "",
        limit + 1,
      ) as SqliteRow[];
      return {
        kvs: rows.slice(0, limit).map(rowToKeyValue),
        more: rows.length > limit,
        revision: state.revision,
      };
    },
    async txn(request: TxnRequest, opts) {
      checkTxn(request);
      return enqueue<TxnResult>((rev) => {
        const succeeded = request.compares.every(
          (c) => Number(stmt.modRev.get(c.key) ?? 0) === c.modRevision,
        );
        const ops = succeeded ? request.success : (request.failure ?? []);
        const events = applyOps(stmt, ops, rev);
        const wrote = ops.length > 0;
        return {
          result: { succeeded, revision: wrote ? rev : rev - 1 },
          events,
          consumedRevision: wrote,
        };
      }, opts);
    },
    watch: (prefix, fromRevision, opts) => watchSqlite(stmt, state, prefix, fromRevision, opts),
    grantLease: leases.grantLease,
    lease: (id, ttlMs) => leases.lease(id, ttlMs),
    async revision(opts) {
      throwIfAborted(opts);
      return state.revision;
    },
    async close() {
      if (state.closed) return;
      state.closed = true;
      leases.stopSweep();
      writes.flushPending();
      db.close();
    },
  };
}
