import { randomBytes } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { movedIn, releaseLock, removeGone } from "./file-set-lock.js";
import { processAlive, processStartTime } from "./process-alive.js";

/** How many times a starter looks again at a lock changing hands under it before it gives up. */
const ATTEMPTS = 50;

/** Another live process holds a directory's lock; nothing in the directory was touched. */
export class DirectoryInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    message = `directory in use by pid ${pid}: ${dir}`,
  ) {
    super(message);
    this.name = "DirectoryInUseError";
  }
}

/**
 * Takes the lock `name` in `dir` for this process, or throws
 * DirectoryInUseError naming the live holder; answers its release
 * (idempotent, also run at process exit). A holder counts as alive only
 * while a process with its pid exists *and* started at its start time
 * (/proc/PID/stat), so a crashed holder's lock is taken over even after
 * its pid was reused. A kernel lock (flock) would need a native module.
 *
 * The lock is a folder holding one file, named for its holder, that holds
 * "pid start-time": made whole beside its place and renamed in, which fails
 * while the place holds a non-empty folder, so of several starters one
 * wins. A dead holder's lock is broken by removing only that holder's file
 * (its name is never used again): a starter that judged it dead and acts
 * late removes a file already gone, never a newer holder's. A plain lock
 * file (an earlier version's, same content) is judged by its pid alike and
 * removed when dead; removing it by name can never remove a folder.
 */
export function lockDirectory(dir: string, name: string): () => void {
  const lock = join(realpathSync(dir), name);
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
        };
        process.once("exit", release);
        return release;
      }
      const holder = holderOf(lock);
      // Free (an empty folder) or changing hands: the next rename tells.
      if (holder === undefined) continue;
      if (processAlive(holder.pid, holder.start)) throw new DirectoryInUseError(dir, holder.pid);
      removeGone(holder.file);
    }
    throw new DirectoryInUseError(dir, holderOf(lock)?.pid ?? 0);
  } catch (err) {
    rmSync(mine, { recursive: true, force: true });
    throw err;
  }
}

/** The holder of `lock` (a folder, or an earlier version's plain file); undefined if none. */
function holderOf(lock: string): { file: string; pid: number; start: string } | undefined {
  try {
    const entry = lstatSync(lock).isDirectory() ? readdirSync(lock)[0] : "";
    if (entry === undefined) return undefined;
    const file = entry === "" ? lock : join(lock, entry);
    // Anything but "pid start-time" names no process: a dead holder's.
    const m = /^(\d+) (\S+)$/.exec(readFileSync(file, "utf8").trim());
    return { file, pid: Number(m?.[1] ?? 0), start: m?.[2] ?? "" };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") return undefined;
    throw err;
  }
}
