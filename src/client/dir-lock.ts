import { randomBytes } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { movedIn, releaseLock, removeGone, waitersBeside } from "./file-set-lock.js";
import { KERNEL_LOCK_BUSY, takeKernelLock } from "./kernel-lock.js";
import { processAlive, processStartTime } from "./process-alive.js";

/** How many times a starter looks again at a lock changing hands under it before it gives up. */
const ATTEMPTS = 50;
/** The pause between two looks at a lock whose holder is moving its record in (ms). */
const RECORD_WAIT_MS = 2;

/** Another live process holds a directory's lock; nothing in the directory was touched. */
export class DirectoryInUseError extends Error {
  constructor(
    readonly dir: string,
    /** The holder's pid as its record names it; 0 when it names none. */
    readonly pid: number,
    /** The holder for a message: `pid N`, `pid N in another pid namespace` or `pid unknown`. */
    readonly holder = pid > 0 ? `pid ${pid}` : "pid unknown",
    message = `directory in use by ${holder}: ${dir}`,
  ) {
    super(message);
    this.name = "DirectoryInUseError";
  }
}

/**
 * Takes the lock `name` in `dir` for this process, or throws
 * DirectoryInUseError naming the live holder; answers its release
 * (idempotent, also run at process exit).
 *
 * First a lock the kernel holds (`<name>.db`, {@link takeKernelLock}): held
 * by another process, in whatever pid namespace, the directory is in use;
 * the kernel drops it when its holder dies, however it dies. Then the
 * folder lock, which earlier versions know alone, so that one of them
 * still sees the directory held: a folder holding one file, named for its
 * holder, that holds "pid start-time", made whole beside its place and
 * renamed in, which fails while the place holds a non-empty folder. With
 * the kernel lock, no holder of this version is alive and none is midway:
 * the folder is taken over whatever its record says (a pid of another
 * namespace, a link, garbage) unless it names a live process here (an
 * earlier version's holder, alive while its pid runs with its start time),
 * and the folders of starters killed midway are removed. A holder's file
 * is removed alone (its name is never used again), and a plain lock file
 * (an earlier version's, same content) by a name that can never remove a
 * folder.
 */
export function lockDirectory(dir: string, name: string): () => void {
  const lock = join(realpathSync(dir), name);
  try {
    const unlock = takeKernelLockOf(dir, lock);
    try {
      removeLeftovers(lock);
      return takeFolderLock(dir, lock, unlock);
    } catch (err) {
      unlock();
      throw err;
    }
  } catch (err) {
    throw permissionDenied(err, dir, lock) ?? err;
  }
}

/** The kernel lock beside `lock`, or DirectoryInUseError naming its holder. */
function takeKernelLockOf(dir: string, lock: string): () => void {
  for (let attempt = 0; ; attempt++) {
    const unlock = takeKernelLock(`${lock}.db`);
    if (unlock !== KERNEL_LOCK_BUSY) return unlock;
    const holder = holderOf(lock);
    const alive = holder !== undefined && processAlive(holder.pid, holder.start);
    // A record not naming a live process here may be a dead holder's, the new one moving its own in.
    if (alive || attempt >= ATTEMPTS) {
      // Older than the kernel lock's last taking, the record is not its holder's: one still starting.
      if (!alive && (holder === undefined || olderThan(holder.file, `${lock}.db`)))
        throw new DirectoryInUseError(dir, 0, "a starter, pid unknown");
      const pid = holder?.pid ?? 0;
      const where = pid > 0 && !alive ? `pid ${pid} in another pid namespace` : undefined;
      throw new DirectoryInUseError(dir, pid, where);
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, RECORD_WAIT_MS);
  }
}

/**
 * Whether `file` was last written before `other` (the kernel lock's file,
 * written by each taking of it, so a holder's record is never older);
 * false if either is gone.
 */
function olderThan(file: string, other: string): boolean {
  try {
    return statSync(file).mtimeMs < statSync(other).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** The folder lock, taken by a holder of the kernel lock; its release lets go of both. */
function takeFolderLock(dir: string, lock: string, unlock: () => void): () => void {
  const me = `${process.pid}-${randomBytes(6).toString("hex")}`;
  const mine = `${lock}.${me}`;
  mkdirSync(mine, { mode: 0o700 });
  try {
    const start = processStartTime(process.pid) ?? "?";
    writeFileSync(join(mine, me), `${process.pid} ${start}\n`, { mode: 0o600 });
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (movedIn(mine, lock)) {
        const release = () => {
          process.removeListener("exit", release);
          releaseLock(lock, me);
          unlock();
        };
        process.once("exit", release);
        return release;
      }
      const holder = holderOf(lock);
      // Free (an empty folder) or changing hands: the next rename tells.
      if (holder === undefined) continue;
      if (processAlive(holder.pid, holder.start)) throw new DirectoryInUseError(dir, holder.pid);
      // A folder where a holder's file belongs is removed whole; never the lock itself.
      if (!removeGone(holder.file) && holder.file !== lock)
        rmSync(holder.file, { recursive: true, force: true });
    }
    throw new DirectoryInUseError(dir, holderOf(lock)?.pid ?? 0);
  } catch (err) {
    rmSync(mine, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Removes the folders starters killed before they moved theirs in left
 * beside `lock` (`<lock>.<pid>-<hex>`). Only a holder of the kernel lock
 * may: then no starter of this version is midway; one whose record names a
 * live process here (an earlier version's starter) stays.
 */
function removeLeftovers(lock: string): void {
  for (const left of waitersBeside(lock)) {
    const holder = holderOf(left);
    if (holder === undefined || !processAlive(holder.pid, holder.start))
      rmSync(left, { recursive: true, force: true });
  }
}

/** The holder of `lock` (a folder, or an earlier version's plain file); undefined if none. */
function holderOf(lock: string): { file: string; pid: number; start: string } | undefined {
  try {
    const entry = lstatSync(lock).isDirectory() ? readdirSync(lock)[0] : "";
    if (entry === undefined) return undefined;
    const file = entry === "" ? lock : join(lock, entry);
    // Anything but a file holding "pid start-time" (a link, a folder, garbage) names no process.
    if (!lstatSync(file).isFile()) return { file, pid: 0, start: "" };
    const m = /^(\d+) (\S+)$/.exec(readFileSync(file, "utf8").trim());
    return { file, pid: Number(m?.[1] ?? 0), start: m?.[2] ?? "" };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") return undefined;
    throw err;
  }
}

/**
 * A lock this user may not read or remove (a daemon or agent run as root
 * crashed holding it, a service user's starts next), said so with what to
 * do; another error of the kernel lock's file, naming it; undefined for
 * any other error.
 */
function permissionDenied(err: unknown, dir: string, lock: string): Error | undefined {
  const code = (err as { code?: unknown }).code;
  const fsDenied = code === "EACCES" || code === "EPERM";
  // The kernel lock's file: another user's is opened read-only (SQLITE_READONLY) or not at all
  // (SQLITE_CANTOPEN); any other (a full disk: SQLITE_FULL) is no other user's doing.
  const sqliteDenied = typeof code === "string" && /^SQLITE_(READONLY|CANTOPEN)(_|$)/.test(code);
  if (!fsDenied && !sqliteDenied)
    // SQLite's own message names no file.
    return typeof code === "string" && code.startsWith("SQLITE_")
      ? new Error(`${lock}.db: ${(err as Error).message}`, { cause: err })
      : undefined;
  const path = (fsDenied ? (err as NodeJS.ErrnoException).path : undefined) ?? `${lock}.db`;
  return new Error(
    `${path}: ${fsDenied ? "permission denied" : (err as Error).message}: a lock left by another user (a daemon or agent run as root?); if none runs on ${dir}, remove ${lock} and ${lock}.*, or start as that user`,
    { cause: err },
  );
}
