import { randomBytes } from "node:crypto";
import {
  linkSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { processAlive, processStartTime } from "../client/index.js";
import type { Config } from "./config-schema.js";

/** The lock file each data directory holds while a daemon uses it. */
export const LOCK_FILE = ".debvisor-rpcd.lock";

/** Another live daemon holds a data directory; nothing was opened or written. */
export class DataDirInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`data directory in use by pid ${pid}: ${dir}`);
    this.name = "DataDirInUseError";
  }
}

/** Held locks; `release()` removes them (idempotent, also run at process exit). */
export interface DataDirLock {
  readonly dirs: readonly string[];
  release(): void;
}

/**
 * The directories one daemon must own alone: dev mode's data directory; else
 * the SQLite file's directory and the audit trail's directory. An etcd store
 * is shared by design and takes no lock.
 */
export function dataDirectories(
  config: Config,
  defaults: { sqlitePath: string; auditPath: string },
): string[] {
  const dirs = new Set<string>();
  if (config.dev.enabled) dirs.add(resolve(config.dev.dataDir));
  if (config.store.backend === "sqlite")
    dirs.add(
      resolve(
        dirname(
          config.store.path ??
            (config.dev.enabled ? join(config.dev.dataDir, "state.db") : defaults.sqlitePath),
        ),
      ),
    );
  if (config.audit.enabled)
    dirs.add(
      resolve(
        dirname(
          config.audit.path ??
            (config.dev.enabled ? join(config.dev.dataDir, "audit.log") : defaults.auditPath),
        ),
      ),
    );
  return [...dirs];
}

/**
 * Takes every directory's lock, or none: throws DataDirInUseError naming the
 * live holder. The lock is a file created with link(2) (atomic, fails when it
 * exists) holding "pid start-time"; a holder counts as alive only while a
 * process with that pid exists *and* started at that time (/proc/PID/stat), so
 * a crashed daemon's lock is taken over even after its pid was reused. A
 * kernel lock (flock) would need a native module; this needs only the
 * directory, and a stale lock is replaced by rename, so two starters racing
 * over the same stale file cannot both win.
 */
export function lockDataDirectories(dirs: readonly string[]): DataDirLock {
  const held: string[] = [];
  const release = () => {
    for (const file of held.splice(0)) {
      try {
        if (readHolder(file)?.token === ownToken()) unlinkSync(file);
      } catch {
        // already gone
      }
    }
    process.removeListener("exit", release);
  };
  try {
    for (const dir of dirs) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      held.push(lockOne(join(realpathSync(dir), LOCK_FILE), dir));
    }
  } catch (err) {
    release();
    throw err;
  }
  process.once("exit", release);
  return { dirs: [...dirs], release };
}

function lockOne(file: string, dir: string): string {
  for (let attempt = 0; attempt < 5; attempt++) {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
    writeFileSync(tmp, `${ownToken()}\n`, { mode: 0o600 });
    try {
      linkSync(tmp, file);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      unlinkSync(tmp);
    }
    const holder = readHolder(file);
    if (holder !== undefined && holder.token === ownToken()) return file;
    if (holder !== undefined && processAlive(holder.pid, holder.start))
      throw new DataDirInUseError(dir, holder.pid);
    // Stale: move it aside, then make sure what moved is what was judged stale.
    const aside = `${file}.stale.${randomBytes(4).toString("hex")}`;
    try {
      renameSync(file, aside);
    } catch {
      continue;
    }
    const moved = readHolder(aside);
    if (moved !== undefined && holder !== undefined && moved.token !== holder.token) {
      // A racer's fresh lock: put it back (link fails if yet another one is there).
      try {
        linkSync(aside, file);
      } catch {
        // someone holds it now; the next attempt reads who
      }
    }
    unlinkSync(aside);
  }
  const holder = readHolder(file);
  throw new DataDirInUseError(dir, holder?.pid ?? 0);
}

let token: string | undefined;
function ownToken(): string {
  token ??= `${process.pid} ${processStartTime(process.pid) ?? "?"}`;
  return token;
}

function readHolder(file: string): { pid: number; start: string; token: string } | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8").trim();
  } catch {
    return undefined;
  }
  const m = /^(\d+) (\S+)$/.exec(text);
  if (m === null) return { pid: 0, start: "", token: text };
  return { pid: Number(m[1]), start: m[2] as string, token: text };
}
