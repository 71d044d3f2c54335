/**
 * The SQLite file behind the simulation's shared disk locks
 * (`disk-locks.sqlite`): opened WAL with a busy timeout by several agent
 * processes at once, its schema, its prepared statements, and the rule
 * that says whether a node is fenced from a disk.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS locks (disk TEXT PRIMARY KEY, owner TEXT NOT NULL, generation INTEGER NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocklist (disk TEXT NOT NULL, node TEXT NOT NULL, by_node TEXT NOT NULL, generation INTEGER NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (disk, node));
CREATE TABLE IF NOT EXISTS definitions (vm TEXT PRIMARY KEY, info TEXT NOT NULL);
`;

/** The owner of a lock nobody holds (released by its last owner; its generation kept). */
export const FREE = "";

/** A lock as its row holds it. */
export interface LockRow {
  disk: string;
  owner: string;
  generation: bigint;
}

/** Opens before giving up when the file stays busy (each try waits up to the busy timeout anyway). */
const OPEN_ATTEMPTS = 20;

/**
 * Opens the shared file, WAL, with a busy timeout and the schema. Nodes
 * starting together all open a new file at once: turning it to WAL or
 * creating its tables can answer SQLITE_BUSY at once, without waiting for
 * the busy timeout (SQLite does not wait where waiting could deadlock), and
 * an agent then failed to start ("database is locked", seen once in CI). The
 * whole sequence is tried again after a short pause; the schema is created
 * in an immediate transaction, which takes the write lock before reading.
 */
function openShared(file: string): Database.Database {
  for (let attempt = 1; ; attempt++) {
    const db = new Database(file);
    try {
      db.pragma("busy_timeout = 10000");
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = FULL");
      db.transaction(() => db.exec(SCHEMA)).immediate();
      return db;
    } catch (err) {
      db.close();
      const busy = String((err as { code?: unknown }).code ?? "").startsWith("SQLITE_BUSY");
      if (!busy || attempt >= OPEN_ATTEMPTS) throw err;
      // Synchronous like the rest of this store (the callers open it before serving).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20 * attempt);
    }
  }
}

/** The open shared file and its prepared statements. */
export interface DiskLockStore {
  readonly db: Database.Database;
  readonly getLock: Database.Statement;
  readonly putLock: Database.Statement;
  readonly seedLock: Database.Statement;
  readonly block: Database.Statement;
  readonly unblock: Database.Statement;
  readonly blocks: Database.Statement;
  readonly putDefinition: Database.Statement;
  readonly getDefinition: Database.Statement;
  /** Whether `node` may not write `disk` (another node holds it, or it was blocklisted from it). */
  readonly fenced: (disk: string, node: string, row: LockRow) => boolean;
}

/** Opens (creating if needed) `disk-locks.sqlite` in `dir` and prepares its statements. */
export function openDiskLockStore(dir: string): DiskLockStore {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const db = openShared(join(dir, "disk-locks.sqlite"));
  const getLock = db.prepare("SELECT disk, owner, generation FROM locks WHERE disk = ?");
  getLock.safeIntegers(true);
  const putLock = db.prepare(
    "INSERT INTO locks (disk, owner, generation, at_ms) VALUES (?, ?, ?, ?) ON CONFLICT(disk) DO UPDATE SET owner = excluded.owner, generation = excluded.generation, at_ms = excluded.at_ms",
  );
  const seedLock = db.prepare(
    "INSERT OR IGNORE INTO locks (disk, owner, generation, at_ms) VALUES (?, ?, 0, ?)",
  );
  const block = db.prepare(
    "INSERT OR REPLACE INTO blocklist (disk, node, by_node, generation, at_ms) VALUES (?, ?, ?, ?, ?)",
  );
  const unblock = db.prepare("DELETE FROM blocklist WHERE disk = ? AND node = ?");
  const blocked = db.prepare("SELECT 1 FROM blocklist WHERE disk = ? AND node = ?");
  /**
   * Whether `node` may not write `disk`: another node holds its lock, or
   * the node was blocklisted from it and has not taken it since (a free lock
   * does not lift a blocklisting: a fenced copy never runs again unstarted).
   */
  const fenced = (disk: string, node: string, row: LockRow) =>
    row.owner !== node && (row.owner !== FREE || blocked.get(disk, node) !== undefined);
  const blocks = db.prepare(
    "SELECT disk, node, by_node AS byNode, generation, at_ms AS atMs FROM blocklist ORDER BY at_ms DESC, disk",
  );
  blocks.safeIntegers(true);
  const putDefinition = db.prepare(
    "INSERT INTO definitions (vm, info) VALUES (?, ?) ON CONFLICT(vm) DO UPDATE SET info = excluded.info",
  );
  const getDefinition = db.prepare("SELECT info FROM definitions WHERE vm = ?");
  return {
    db,
    getLock,
    putLock,
    seedLock,
    block,
    unblock,
    blocks,
    putDefinition,
    getDefinition,
    fenced,
  };
}
