import {
  closeSync,
  constants,
  fchownSync,
  lchownSync,
  lstatSync,
  openSync,
  statSync,
} from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type BetterSqlite3 from "better-sqlite3";

/** Another process (in any pid namespace) holds the kernel lock. */
export const KERNEL_LOCK_BUSY = "busy";

/**
 * Takes a lock the kernel holds for this process on `file` (created if
 * missing), or answers {@link KERNEL_LOCK_BUSY} at once while another
 * connection holds it, in this process or any other on the filesystem,
 * whatever its pid namespace; answers its release (idempotent).
 *
 * A POSIX record lock, held through SQLite (better-sqlite3, the native
 * module the SQLite store ships, so no other): a connection in exclusive
 * locking mode keeps the lock its first write transaction took until it is
 * closed, and the kernel drops it when the process ends, even by SIGKILL.
 * Record locks belong to a process, and closing any descriptor of the file
 * drops all of them: nothing else may open `file` (SQLite itself keeps
 * several connections of one process apart). Loaded on first use, so
 * `hvctl`, which imports this layer, does not pay for loading it.
 */
export function takeKernelLock(file: string): (() => void) | typeof KERNEL_LOCK_BUSY {
  createdOrPlain(file);
  const db = new (sqlite())(file, { timeout: 0 });
  try {
    db.pragma("locking_mode = EXCLUSIVE");
    // No journal file to leave behind (another user's could not be opened); the file's content is not used.
    db.pragma("journal_mode = MEMORY");
    db.exec("BEGIN EXCLUSIVE");
    // A write: a file SQLite could open read-only only (another user's) fails here, not with a shared lock.
    db.pragma("user_version = 1");
    db.exec("COMMIT");
  } catch (err) {
    db.close();
    if ((err as { code?: unknown }).code === "SQLITE_BUSY") return KERNEL_LOCK_BUSY;
    throw err;
  }
  return () => {
    if (db.open) db.close();
  };
}

/**
 * Makes `file` a plain file of its own before SQLite opens it, which
 * follows links: the directory's owner (the service user, its data
 * directory) could plant a link there to any path, and a daemon or agent
 * run as root would create or write that path (`/etc/nologin`, another
 * database) and, giving it to the directory's owner, hand them a file of
 * root's. A missing file is created, never through a link, and, run as root
 * in a directory another user owns, given to that user, so that their
 * daemon or agent can take the lock after this process. An existing one is
 * looked at without being opened: this process may hold its lock, which
 * closing a descriptor of it would drop.
 */
function createdOrPlain(file: string): void {
  const owner = ownerOfDirectory(file);
  let fd: number;
  try {
    fd = openSync(
      file,
      constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    const st = lstatSync(file);
    if (!st.isFile() || st.nlink !== 1)
      throw new Error(
        `${file}: not a plain file of its own (a link, a folder?): the lock's file; if no daemon or agent runs on ${dirname(file)}, remove it`,
      );
    // lchown: a link put in its place since is changed, never what it names.
    if (owner !== undefined && st.uid !== owner.uid) lchownSync(file, owner.uid, owner.gid);
    return;
  }
  try {
    if (owner !== undefined) fchownSync(fd, owner.uid, owner.gid);
  } finally {
    closeSync(fd);
  }
}

/** Run as root in a directory another user owns (the service user's data directory), that user. */
function ownerOfDirectory(file: string): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const { uid, gid } = statSync(dirname(file));
  return uid === 0 ? undefined : { uid, gid };
}

let loaded: typeof BetterSqlite3 | undefined;
function sqlite(): typeof BetterSqlite3 {
  loaded ??= createRequire(import.meta.url)("better-sqlite3") as typeof BetterSqlite3;
  return loaded;
}
