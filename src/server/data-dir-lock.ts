import { mkdirSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { DirectoryInUseError, lockDirectory } from "../client/index.js";
import type { Config } from "./config-schema.js";

/** The lock each data directory holds while a daemon uses it (a folder; a file before). */
export const LOCK_FILE = ".debvisor-rpcd.lock";

/** Another live daemon holds a data directory; nothing was opened or written. */
export class DataDirInUseError extends DirectoryInUseError {
  constructor(dir: string, pid: number, holder = `pid ${pid}`) {
    super(dir, pid, holder, `data directory in use by ${holder}: ${dir}`);
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
 * Takes every directory's lock ({@link lockDirectory}), or none: throws
 * DataDirInUseError naming the live holder. Two paths to one directory (a
 * symbolic link) take its lock once.
 */
export function lockDataDirectories(dirs: readonly string[]): DataDirLock {
  const held: (() => void)[] = [];
  const release = () => {
    for (const unlock of held.splice(0).reverse()) unlock();
  };
  const seen = new Set<string>();
  try {
    for (const dir of dirs) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const real = realpathSync(dir);
      if (seen.has(real)) continue;
      seen.add(real);
      try {
        held.push(lockDirectory(dir, LOCK_FILE));
      } catch (err) {
        if (err instanceof DirectoryInUseError)
          throw new DataDirInUseError(dir, err.pid, err.holder);
        throw err;
      }
    }
  } catch (err) {
    release();
    throw err;
  }
  return { dirs: [...dirs], release };
}
