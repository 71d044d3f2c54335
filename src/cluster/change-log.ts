/**
 * The keys changed since a version, for caches that would otherwise throw
 * everything away on any change: a cache notes the version it was built at
 * and, when that is no longer current, asks which keys changed since.
 */
export interface ChangeLog {
  /** The current version: bumped by every {@link ChangeLog.note} and {@link ChangeLog.reset}. */
  version(): number;
  /** Key `key` changed: a new version. */
  note(key: string): void;
  /** Anything may have changed (a reload): a new version, and nothing before it can be answered. */
  reset(): void;
  /**
   * The keys changed after `version` up to now, or undefined when that is
   * not known any more (a reset since, or more changes than the log keeps).
   * Asked for the same version again, the same set is answered until the
   * next change: a listing asks once per cached entry.
   */
  since(version: number): ReadonlySet<string> | undefined;
}

/** Changes kept by default: past this many, older versions read as unknown. */
const DEFAULT_LIMIT = 4096;

/** Creates a {@link ChangeLog} that keeps the last `limit` changes. */
export function createChangeLog(limit = DEFAULT_LIMIT): ChangeLog {
  let version = 0;
  /** The version up to which nothing is known (keys[0] is the change to base + 1). */
  let base = 0;
  let keys: string[] = [];
  let answered: { from: number; to: number; set: ReadonlySet<string> } | undefined;
  return {
    version: () => version,
    note(key) {
      version++;
      keys.push(key);
      if (keys.length > limit) {
        const drop = keys.length - Math.ceil(limit / 2);
        keys = keys.slice(drop);
        base += drop;
      }
    },
    reset() {
      version++;
      base = version;
      keys = [];
    },
    since(from) {
      if (from < base || from > version) return undefined;
      if (answered?.from === from && answered.to === version) return answered.set;
      const set = new Set(keys.slice(from - base));
      answered = { from, to: version, set };
      return set;
    },
  };
}
