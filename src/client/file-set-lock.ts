import { randomBytes } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { processAlive, processSpace, processStartTime } from "./process-alive.js";

/** How long a writer waits for another's lock before it fails. */
const LOCK_WAIT_MS = 10_000;
/** A lock older than this, whose holder cannot be looked up here, is a dead writer's (a write takes milliseconds). */
const STALE_LOCK_MS = 30_000;
/** The pause between two looks at a held lock. */
const RETRY_MS = 10;

/** Who holds a lock: the file naming them inside it, and whether they are gone. */
interface Holder {
  readonly file: string;
  readonly pid: number;
  readonly gone: boolean;
}

/**
 * Takes the lock of the set whose first file is `first` (`<first>.lock`),
 * waiting, without blocking the event loop, at most {@link LOCK_WAIT_MS}
 * while another writer holds it; answers its release.
 *
 * The lock is a folder holding one file, named for its holder, that records
 * the holder's pid: it is made whole beside its place and renamed in, which
 * fails while the place holds a non-empty folder. A dead writer's lock is
 * broken by removing only that writer's file: the folder left empty is
 * free, and of the writers renaming theirs onto it one wins. One who judged
 * the lock stale and acts late removes a file that is already gone, never
 * a newer holder's (a plain lock file removed by name could be). A holder
 * whose pid this process can look up (same host, boot and pid namespace) is
 * gone only when its process is; one it cannot look up (another host
 * sharing the files) is gone once its lock is {@link STALE_LOCK_MS} old.
 */
export async function lockFileSet(first: string): Promise<() => void> {
  const lock = `${first}.lock`;
  const me = `${process.pid}-${randomBytes(6).toString("hex")}`;
  const mine = `${lock}.${me}`;
  mkdirSync(mine, { mode: 0o700 });
  const record = { space: processSpace(), pid: process.pid, start: processStartTime(process.pid) };
  writeFileSync(join(mine, me), JSON.stringify(record), { mode: 0o600 });
  const end = Date.now() + LOCK_WAIT_MS;
  try {
    for (;;) {
      if (movedIn(mine, lock)) {
        // Its age counts from now, not from when this writer began to wait.
        const now = new Date();
        utimesSync(join(lock, me), now, now);
        removeGoneWaiters(lock);
        return () => releaseLock(lock, me);
      }
      const holder = holderOf(lock);
      // A gone holder whose file stays (not this writer's to remove) is waited on like a live one.
      if (holder?.gone && removeGone(holder.file)) continue;
      if (Date.now() >= end)
        throw new Error(
          `${lock}: another writer holds these files${holder === undefined ? "" : ` (pid ${holder.pid})`}; remove the lock if no writer runs`,
        );
      await sleep(RETRY_MS);
    }
  } catch (err) {
    rmSync(mine, { recursive: true, force: true });
    throw err;
  }
}

/** Renames the folder `mine` to `lock`; false while `lock` is held (or is not a folder). */
export function movedIn(mine: string, lock: string): boolean {
  try {
    renameSync(mine, lock);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOTDIR" || code === "EISDIR")
      return false;
    throw err;
  }
}

/** The holder of `lock`; undefined if it has none (free, or changing hands). */
function holderOf(lock: string): Holder | undefined {
  try {
    // Anything but a folder (a lock file of an earlier version, a link) is judged by its age
    // alone, and removing it can never remove a folder (unlink fails on one).
    const name = lstatSync(lock).isDirectory() ? readdirSync(lock)[0] : "";
    if (name === undefined) return undefined;
    const file = name === "" ? lock : join(lock, name);
    const age = Date.now() - statSync(file).mtimeMs;
    const held = parse(readFileSync(file, "utf8"));
    if (held === undefined || held.space !== processSpace())
      return { file, pid: held?.pid ?? 0, gone: age > STALE_LOCK_MS };
    return { file, pid: held.pid, gone: !processAlive(held.pid, held.start ?? "?") };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function parse(text: string): { space: string; pid: number; start?: string } | undefined {
  try {
    const r = JSON.parse(text) as { space?: unknown; pid?: unknown; start?: unknown };
    if (typeof r.space !== "string" || typeof r.pid !== "number") return undefined;
    return { space: r.space, pid: r.pid, start: typeof r.start === "string" ? r.start : undefined };
  } catch {
    return undefined;
  }
}

/**
 * Removes a gone holder's file; false if it stays (a folder, or a file this
 * process may not remove: the sticky bit, an immutable file). One already
 * removed (by another writer) is removed.
 */
export function removeGone(file: string): boolean {
  try {
    unlinkSync(file);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return true;
    if (code === "EISDIR" || code === "EPERM") return false;
    throw err;
  }
}

/** When `path` was last changed (ms); now when it is gone. */
function statSafe(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return Date.now();
  }
}

/**
 * Removes the folders that writers killed while they waited for `lock` left
 * beside it (`<lock>.<pid>-<hex>`, see {@link lockFileSet}), judged like a
 * holder: else every kill during a wait (a daemon stopped while it renewed)
 * left one more, for good. A live waiter's stays: it moves it in later.
 */
function removeGoneWaiters(lock: string): void {
  for (const waiter of waitersBeside(lock)) {
    const holder = holderOf(waiter);
    // Empty: killed between making its folder and writing its record, or writing it now;
    // no writer takes that long, so one this old is a dead writer's.
    const gone = holder === undefined ? Date.now() - statSafe(waiter) > STALE_LOCK_MS : holder.gone;
    if (gone) rmSync(waiter, { recursive: true, force: true });
  }
}

/** The folders writers or starters made beside `lock` to move in (`<lock>.<pid>-<hex>`). */
export function waitersBeside(lock: string): string[] {
  const prefix = `${basename(lock)}.`;
  return readdirSync(dirname(lock))
    .filter((n) => n.startsWith(prefix) && /^\d+-[0-9a-f]{12}$/.test(n.slice(prefix.length)))
    .map((n) => join(dirname(lock), n));
}

/** Removes this writer's file from `lock`, then the folder if no other writer has moved in. */
export function releaseLock(lock: string, me: string): void {
  rmSync(join(lock, me), { force: true });
  try {
    rmdirSync(lock);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOTDIR: an earlier version's plain lock file took its place since.
    if (code !== "ENOENT" && code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOTDIR")
      throw err;
  }
}
