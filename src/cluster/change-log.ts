/**
 * When each key last changed, for caches that would otherwise throw
 * everything away on any change: a cache notes the version it was built
 * at and, when that is no longer current, is still good for every key
 * whose last change is not later.
 */
export interface ChangeLog {
  /** The current version: bumped by every {@link ChangeLog.note} and {@link ChangeLog.reset}. */
  version(): number;
  /** Key `key` changed: a new version. */
  note(key: string): void;
  /** Anything may have changed (a reload): a new version, and nothing before it can be answered. */
  reset(): void;
  /**
   * The oldest version the log answers for: a cache built at an older one
   * cannot tell what changed since (a reset, or the log's bound was reached).
   */
  knownFrom(): number;
  /** The version of `key`'s last change, or 0 when it has not changed since {@link ChangeLog.knownFrom}. */
  lastChange(key: string): number;
}

/** Keys kept by default: past this many, the log starts again from the current version. */
const DEFAULT_LIMIT = 16_384;

/** Creates a {@link ChangeLog} that keeps the last change of at most `limit` keys. */
export function createChangeLog(limit = DEFAULT_LIMIT): ChangeLog {
  let version = 0;
  let knownFrom = 0;
  const last = new Map<string, number>();
  return {
    version: () => version,
    note(key) {
      version++;
      if (last.size >= limit && !last.has(key)) {
        // Everything older than this change is forgotten at once: one rebuild, then cheap again.
        last.clear();
        knownFrom = version - 1;
      }
      last.set(key, version);
    },
    reset() {
      version++;
      knownFrom = version;
      last.clear();
    },
    knownFrom: () => knownFrom,
    lastChange: (key) => last.get(key) ?? 0,
  };
}
