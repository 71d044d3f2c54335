import type { KvStore } from "../../src/store/index.js";

/**
 * Watches of `prefix` on `store` that record when each first saw each key,
 * and the errors that ended any; `stop` ends them all.
 */
export function recordWatches(store: KvStore, prefix: string, stop: AbortSignal) {
  const seen: Map<string, number>[] = [];
  const ended: string[] = [];
  const loops: Promise<void>[] = [];
  return {
    seen,
    ended,
    /** Opens `count` more watches from `fromRevision` (0: from now). */
    open(count: number, fromRevision: number) {
      for (let i = 0; i < count; i++) {
        const at = new Map<string, number>();
        seen.push(at);
        loops.push(
          (async () => {
            try {
              for await (const ev of store.watch(prefix, fromRevision, { signal: stop })) {
                if (!at.has(ev.key)) at.set(ev.key, Date.now());
              }
            } catch (err) {
              ended.push(String(err));
            }
          })(),
        );
      }
    },
    /** Resolves once every watch has ended. */
    done: () => Promise.all(loops),
  };
}
