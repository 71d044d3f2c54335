// The SQLite backend's file: opening it with durable settings, its schema,
// the prepared statements every part of the store shares, and the row shape.

import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { type Logger, RpcError } from "../core/index.js";
import type { KeyValue } from "./kv-store.js";

/** A row of the `kv` table as SQLite returns it. */
export interface SqliteRow {
  key: string;
  value: Buffer;
  create_rev: number;
  mod_rev: number;
  version: number;
  lease: string | null;
}

/** The statements of {@link prepareSqliteStatements}, prepared once per store. */
export type SqliteStatements = ReturnType<typeof prepareSqliteStatements>;

/** Converts a `kv` row into the contract's {@link KeyValue}, sharing the row's bytes. */
export const rowToKeyValue = (row: SqliteRow): KeyValue => ({
  key: row.key,
  value: new Uint8Array(row.value.buffer, row.value.byteOffset, row.value.byteLength),
  createRevision: row.create_rev,
  modRevision: row.mod_rev,
  version: row.version,
  lease: row.lease ?? undefined,
});

/** Prepares every statement the store runs against the schema of {@link openSqliteDatabase}. */
export function prepareSqliteStatements(db: Database.Database) {
  return {
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
    // Only a lease not yet expired: as etcd, an expired one is gone though the sweep has not run.
    leaseTouch: db.prepare(
      "UPDATE leases SET expires_at = @now + ttl_ms WHERE id = @id AND expires_at > @now",
    ),
    leaseGet: db.prepare("SELECT id FROM leases WHERE id = ?").pluck(),
    leaseDelete: db.prepare("DELETE FROM leases WHERE id = ?"),
    leaseKeys: db.prepare("SELECT key FROM kv WHERE lease = ?").pluck(),
    expired: db.prepare("SELECT id FROM leases WHERE expires_at <= ?").pluck(),
  };
}

/**
 * Opens (creating if missing, owner-only) the database file in WAL mode with
 * synchronous=FULL and creates the schema; STORE_UNAVAILABLE if the file
 * cannot be opened or SQLite refuses the durable settings.
 */
export function openSqliteDatabase(path: string, log: Logger): Database.Database {
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
