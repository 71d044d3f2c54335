import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
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

/** Resolves once every watch of `seen` has seen `key`; rejects after `withinMs`. */
export async function eventuallySeen(
  seen: readonly Map<string, number>[],
  key: string,
  withinMs: number,
): Promise<void> {
  const until = Date.now() + withinMs;
  while (!seen.every((at) => at.has(key))) {
    if (Date.now() > until) throw new Error(`${key} not seen by every watch in ${withinMs} ms`);
    await sleep(100);
  }
}

/**
 * Waits (at most `boundMs`) for every watch of `w` to see `key`, then checks
 * that each did within `boundMs` of `since` and that none ended; `report`
 * names what the times are, for the test's diagnostics.
 */
export async function seenWithin(
  t: { diagnostic(message: string): void },
  w: { seen: readonly Map<string, number>[]; ended: readonly string[] },
  key: string,
  since: number,
  boundMs: number,
  report: string,
): Promise<void> {
  await eventuallySeen(w.seen, key, boundMs - (Date.now() - since)).catch(() => undefined);
  const late = w.seen.map((at) => (at.get(key) ?? Date.now()) - since);
  t.diagnostic(`${report}: ${late.join(",")}`);
  assert.ok(
    late.every((ms) => ms < boundMs),
    `a watch saw ${key} ${Math.max(...late)} ms late`,
  );
  assert.deepEqual(w.ended, [], "no watch ended");
}
