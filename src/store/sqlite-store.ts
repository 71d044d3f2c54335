import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { abortError, type Clock, type Logger, RpcError, systemClock } from "../core/index.js";
import type {
  KeyValue,
  KvStore,
  Lease,
  PutOptions,
  RangeOptions,
  StoreCallOptions,
  TxnOp,
  TxnRequest,
  TxnResult,
  WatchEvent,
} from "./kv-store.js";
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

/** A watcher further behind than this many events is ended instead of buffering without bound. */
const MAX_WATCH_BACKLOG = 100_000;
const EMPTY = new Uint8Array(0);

interface Row {
  key: string;
  value: Buffer;
  create_rev: number;
  mod_rev: number;
  version: number;
  lease: string | null;
}

interface PendingWrite {
  /** Applies the write inside the batch transaction at `revision`; returns its result and events. */
  apply(revision: number): { result: unknown; events: WatchEvent[]; consumedRevision: boolean };
  resolve(result: unknown): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
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
  const db = openDatabase(options.path, log);

  const stmt = {
    revision: db.prepare("SELECT v FROM meta WHERE k = 'revision'").pluck(),
    compacted: db.prepare("SELECT v FROM meta WHERE k = 'compacted'").pluck(),
    setMeta: db.prepare(
      "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
    ),
    get: db.prepare("SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?"),
    modRev: db.prepare("SELECT mod_rev FROM kv WHERE key = ?").pluck(),
    range: db.prepare(
      "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?",
    ),
    upsert: db.prepare(
      `INSERT INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES (@key, @value, @rev, @rev, 1, @lease)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, version = kv.version + 1, lease = excluded.lease`,
    ),
    del: db.prepare("DELETE FROM kv WHERE key = ?"),
    event: db.prepare("INSERT INTO events (rev, idx, key, type, value) VALUES (?, ?, ?, ?, ?)"),
    events: db.prepare(
      "SELECT rev, idx, key, type, value FROM events WHERE rev >= ? AND key >= ? AND key < ? ORDER BY rev, idx",
    ),
    compact: db.prepare("DELETE FROM events WHERE rev < ?"),
    leaseInsert: db.prepare("INSERT INTO leases (id, ttl_ms, expires_at) VALUES (?, ?, ?)"),
    leaseTouch: db.prepare("UPDATE leases SET expires_at = ? + ttl_ms WHERE id = ?"),
    leaseGet: db.prepare("SELECT id FROM leases WHERE id = ?").pluck(),
    leaseDelete: db.prepare("DELETE FROM leases WHERE id = ?"),
    leaseKeys: db.prepare("SELECT key FROM kv WHERE lease = ?").pluck(),
    expired: db.prepare("SELECT id FROM leases WHERE expires_at <= ?").pluck(),
  };

  const applyInSavepoint = db.transaction((w: PendingWrite, rev: number) => w.apply(rev));
  let revision = Number(stmt.revision.get() ?? 0);
  let queue: PendingWrite[] = [];
  let flushScheduled = false;
  let closed = false;
  const watchers = new Set<(events: readonly WatchEvent[]) => void>();

  const toKv = (row: Row): KeyValue => ({
    key: row.key,
    value: new Uint8Array(row.value.buffer, row.value.byteOffset, row.value.byteLength),
    createRevision: row.create_rev,
    modRevision: row.mod_rev,
    version: row.version,
    lease: row.lease ?? undefined,
  });

  /** Runs every queued write in one transaction: one commit, one fsync. */
  const flush = () => {
    flushScheduled = false;
    const batch = queue.filter((w) => {
      if (w.signal?.aborted) {
        w.reject(abortError(w.signal));
        return false;
      }
      return true;
    });
    queue = [];
    if (batch.length === 0) return;
    const outcomes: ({ ok: true; result: unknown } | { ok: false; error: RpcError })[] = [];
    const events: WatchEvent[] = [];
    let next = revision;
    try {
      db.transaction(() => {
        for (const w of batch) {
          // Each write in its own savepoint: a write refused for its own reason
          // (an expired lease) is rolled back alone and the batch goes on.
          try {
            const out = applyInSavepoint(w, next + 1);
            if (out.consumedRevision) next += 1;
            outcomes.push({ ok: true, result: out.result });
            events.push(...out.events);
          } catch (err) {
            if (!(err instanceof RpcError)) throw err;
            outcomes.push({ ok: false, error: err });
          }
        }
        if (next !== revision) {
          stmt.setMeta.run("revision", next);
          if (Math.floor(next / 1000) > Math.floor(revision / 1000) && next > history) {
            stmt.compact.run(next - history);
            stmt.setMeta.run("compacted", next - history - 1);
          }
        }
      })();
    } catch (err) {
      log.error(
        { err, writes: batch.length },
        "state store write failed; nothing in the batch was applied",
      );
      const failure = new RpcError("STORE_UNAVAILABLE", { cause: err });
      for (const w of batch) w.reject(failure);
      return;
    }
    revision = next;
    batch.forEach((w, i) => {
      const outcome = outcomes[i];
      if (outcome?.ok) w.resolve(outcome.result);
      else w.reject(outcome?.error ?? new RpcError("INTERNAL"));
    });
    if (events.length > 0) for (const notify of watchers) notify(events);
  };

  const enqueue = <T>(
    apply: PendingWrite["apply"],
    options: StoreCallOptions | undefined,
  ): Promise<T> => {
    if (closed)
      return Promise.reject(
        new RpcError("STORE_UNAVAILABLE", { cause: new Error("store closed") }),
      );
    throwIfAborted(options);
    return new Promise<T>((resolve, reject) => {
      queue.push({
        apply,
        resolve: resolve as (r: unknown) => void,
        reject,
        signal: options?.signal,
      });
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    });
  };

  /** Applies one operation at `rev`; returns the event it caused, if any. */
  const applyOp = (op: TxnOp, rev: number, idx: number): WatchEvent | undefined => {
    if (op.type === "put") {
      if (op.lease !== undefined && stmt.leaseGet.get(op.lease) === undefined)
        throw new RpcError("LEASE_NOT_FOUND");
      stmt.upsert.run({ key: op.key, value: Buffer.from(op.value), rev, lease: op.lease ?? null });
      stmt.event.run(rev, idx, op.key, 0, Buffer.from(op.value));
      return { type: "put", key: op.key, value: op.value, revision: rev };
    }
    if (stmt.del.run(op.key).changes === 0) return undefined;
    stmt.event.run(rev, idx, op.key, 1, Buffer.alloc(0));
    return { type: "delete", key: op.key, value: EMPTY, revision: rev };
  };

  const applyOps = (ops: readonly TxnOp[], rev: number): WatchEvent[] => {
    const events: WatchEvent[] = [];
    ops.forEach((op, i) => {
      const e = applyOp(op, rev, i);
      if (e !== undefined) events.push(e);
    });
    return events;
  };

  const deleteLeaseKeys = (leaseId: string, rev: number) => {
    const keys = stmt.leaseKeys.all(leaseId) as string[];
    stmt.leaseDelete.run(leaseId);
    return {
      result: undefined,
      events: applyOps(
        keys.map((key) => ({ type: "delete" as const, key })),
        rev,
      ),
      consumedRevision: keys.length > 0,
    };
  };

  const sweep = setInterval(() => {
    if (closed) return;
    const expired = stmt.expired.all(clock.now()) as string[];
    for (const id of expired) {
      enqueue(
        (rev) =>
          stmt.leaseGet.get(id) === undefined
            ? { result: undefined, events: [], consumedRevision: false }
            : deleteLeaseKeys(id, rev),
        undefined,
      ).catch((err: unknown) => log.error({ err, lease: id }, "lease expiry failed"));
    }
  }, options.leaseSweepMs ?? 250);
  sweep.unref();

  const makeLease = (id: string, ttlMs: number): Lease => ({
    id,
    ttlMs,
    keepAlive: async (opts) =>
      enqueue((): { result: undefined; events: WatchEvent[]; consumedRevision: boolean } => {
        if (stmt.leaseTouch.run(clock.now(), id).changes === 0)
          throw new RpcError("LEASE_NOT_FOUND");
        return { result: undefined, events: [], consumedRevision: false };
      }, opts),
    revoke: async (opts) =>
      enqueue((rev) => {
        if (stmt.leaseGet.get(id) === undefined) throw new RpcError("LEASE_NOT_FOUND");
        return deleteLeaseKeys(id, rev);
      }, opts),
  });

  return {
    backend: "sqlite",
    async get(key, opts) {
      checkKey(key);
      throwIfAborted(opts);
      const row = stmt.get.get(key) as Row | undefined;
      return row === undefined ? undefined : toKv(row);
    },
    async put(key, value, opts?: PutOptions) {
      checkKey(key);
      checkValue(value);
      return enqueue<number>((rev) => {
        const events = applyOps([{ type: "put", key, value, lease: opts?.lease }], rev);
        return { result: rev, events, consumedRevision: true };
      }, opts);
    },
    async delete(key, opts) {
      checkKey(key);
      return enqueue<{ revision: number; deleted: boolean }>((rev) => {
        const events = applyOps([{ type: "delete", key }], rev);
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
      const rows = stmt.range.all(prefix, prefixEnd(prefix), opts?.after ?? "", limit + 1) as Row[];
      return { kvs: rows.slice(0, limit).map(toKv), more: rows.length > limit, revision };
    },
    async txn(request: TxnRequest, opts) {
      checkTxn(request);
      return enqueue<TxnResult>((rev) => {
        const succeeded = request.compares.every(
          (c) => Number(stmt.modRev.get(c.key) ?? 0) === c.modRevision,
        );
        const ops = succeeded ? request.success : (request.failure ?? []);
        const events = applyOps(ops, rev);
        const wrote = ops.length > 0;
        return {
          result: { succeeded, revision: wrote ? rev : rev - 1 },
          events,
          consumedRevision: wrote,
        };
      }, opts);
    },
    async *watch(prefix, fromRevision, opts) {
      checkPrefix(prefix);
      if (opts.signal.aborted) return;
      const end = prefixEnd(prefix);
      const pending: WatchEvent[] = [];
      let wake: (() => void) | undefined;
      let overflow = false;
      // Backlog and subscription are taken in one synchronous step: no write can commit in between.
      const compactedUpTo = Number(stmt.compacted.get() ?? 0);
      if (fromRevision > 0 && fromRevision <= compactedUpTo) throw new RpcError("WATCH_COMPACTED");
      const start = fromRevision > 0 ? fromRevision : revision + 1;
      for (const r of stmt.events.iterate(start, prefix, end) as Iterable<{
        rev: number;
        key: string;
        type: number;
        value: Buffer;
      }>) {
        pending.push({
          type: r.type === 0 ? "put" : "delete",
          key: r.key,
          value: r.type === 0 ? new Uint8Array(r.value) : EMPTY,
          revision: r.rev,
        });
      }
      const listener = (events: readonly WatchEvent[]) => {
        for (const e of events) if (e.key >= prefix && e.key < end) pending.push(e);
        if (pending.length > MAX_WATCH_BACKLOG) overflow = true;
        wake?.();
      };
      watchers.add(listener);
      const onAbort = () => wake?.();
      opts.signal.addEventListener("abort", onAbort);
      try {
        while (!opts.signal.aborted) {
          if (overflow)
            throw new RpcError("STORE_UNAVAILABLE", {
              message: "watcher fell too far behind; watch again",
            });
          const e = pending.shift();
          if (e !== undefined) {
            yield e;
            continue;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
        }
      } finally {
        watchers.delete(listener);
        opts.signal.removeEventListener("abort", onAbort);
      }
    },
    async grantLease(ttlMs, opts) {
      if (!Number.isInteger(ttlMs) || ttlMs < 1)
        throw new TypeError("lease ttlMs must be a positive integer");
      const id = randomBytes(8).toString("hex");
      return enqueue<Lease>(() => {
        stmt.leaseInsert.run(id, ttlMs, clock.now() + ttlMs);
        return { result: makeLease(id, ttlMs), events: [], consumedRevision: false };
      }, opts);
    },
    lease: (id, ttlMs) => makeLease(id, ttlMs),
    async revision(opts) {
      throwIfAborted(opts);
      return revision;
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      if (queue.length > 0) flush();
      db.close();
    },
  };
}

function openDatabase(path: string, log: Logger): Database.Database {
  let db: Database.Database;
  try {
    // The state holds key hashes and certificate records: owner-only from the first byte.
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    closeSync(openSync(path, "a", 0o600));
    db = new Database(path);
  } catch (err) {
    throw new RpcError("STORE_UNAVAILABLE", { cause: err });
  }
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("busy_timeout = 5000");
  const journal = String(db.pragma("journal_mode", { simple: true }));
  const synchronous = Number(db.pragma("synchronous", { simple: true }));
  // synchronous=FULL is 2. A kill -9 test cannot tell FULL from NORMAL, so this check is the guard.
  if (journal !== "wal" || synchronous !== 2) {
    db.close();
    throw new RpcError("STORE_UNAVAILABLE", {
      cause: new Error(
        `SQLite refused durable settings: journal_mode=${journal} synchronous=${synchronous}`,
      ),
    });
  }
  db.exec(`
    CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv (
      key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
      mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
    CREATE TABLE IF NOT EXISTS events (
      rev INTEGER NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL, value BLOB NOT NULL,
      PRIMARY KEY (rev, idx)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
  `);
  log.info({ journal_mode: journal, synchronous: "FULL" }, "state store opened");
  return db;
}
