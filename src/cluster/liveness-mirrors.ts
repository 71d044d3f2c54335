/**
 * This process's copy of the liveness keys (`liveness/` and
 * `liveness-fence/`), loaded on first use, and when it saw each node lose
 * its READY key: the state the lease liveness reads its views from.
 */
import type { Clock, Logger } from "../core/index.js";
import { type KvStore, mirrorPrefix, type PrefixMirror } from "../store/index.js";
import { decodeHeldKey, type HeldKey } from "./renew-lease-key.js";

/** The READY and fence key copies, in that order. */
export type LivenessKeyMirrors = [PrefixMirror<HeldKey>, PrefixMirror<HeldKey>];

/** What the lease liveness's parts share about the copy. */
export interface LivenessMirrorState {
  /** The copies once loaded; undefined before. */
  loaded: LivenessKeyMirrors | undefined;
  /** When the copy loaded (this process's clock). */
  startedAt: number;
  /** When this process saw each node lose its READY key (its own clock). */
  readonly lostAt: Map<string, number>;
}

/** Loading and closing the copies of {@link createLivenessMirrors}. */
export interface LivenessMirrors {
  /** Loads the copies once (again after a failed load); resolves with them. */
  follow(): Promise<LivenessKeyMirrors>;
  close(): void;
}

/** Creates the copies of the keys under `readyPrefix` and `fencePrefix`, filling `state` once loaded. */
export function createLivenessMirrors(
  state: LivenessMirrorState,
  store: KvStore,
  clock: Clock,
  logger: Logger,
  readyPrefix: string,
  fencePrefix: string,
): LivenessMirrors {
  const { lostAt } = state;
  let mirrors: Promise<LivenessKeyMirrors> | undefined;

  function follow() {
    if (mirrors === undefined) {
      const loading = Promise.all([
        mirrorPrefix(store, readyPrefix, decodeHeldKey, logger, { revisionOf: (k) => k.rev }),
        mirrorPrefix(store, fencePrefix, decodeHeldKey, logger, { revisionOf: (k) => k.rev }),
      ]);
      mirrors = loading;
      loading.then(
        (ms) => {
          state.startedAt = clock.now();
          state.loaded = ms;
          let present = new Set(ms[0].values().keys());
          // One key changed (a lease attached or expired), or after a reload any of them.
          ms[0].onChange((id) => {
            const now = ms[0].values();
            if (id !== undefined) {
              if (now.has(id)) present.add(id);
              else if (present.delete(id) && !lostAt.has(id)) lostAt.set(id, clock.now());
              return;
            }
            for (const gone of present)
              if (!now.has(gone) && !lostAt.has(gone)) lostAt.set(gone, clock.now());
            present = new Set(now.keys());
          });
        },
        () => {
          if (mirrors === loading) mirrors = undefined;
        },
      );
    }
    return mirrors;
  }

  return {
    follow,
    close() {
      void mirrors?.then((ms) => {
        for (const m of ms) m.close();
      });
    },
  };
}
