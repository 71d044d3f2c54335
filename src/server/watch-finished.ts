/**
 * The store watch behind the cluster metrics' counters of finished
 * migrations and failed replication runs: each finished record counted once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import type { KvStore } from "../store/index.js";

/** Ids of finished migrations already counted (a finished record may be written again). */
const REMEMBERED = 10_000;

/** How a record is counted: once per key (a function), once per id, or not at all. */
export type Counted = (() => void) | { id: string; count: () => void } | undefined;

/**
 * Follows migration records and replication status records from now on and
 * counts each finished one once. Restarts from the current revision after
 * an error (a missed event is a missed count, never a double one).
 */
export async function watchFinished(
  store: KvStore,
  closing: AbortSignal,
  logger: Logger,
  classify: (key: string, value: Uint8Array) => Counted,
): Promise<void> {
  const seen = new Set<string>();
  const remember = (id: string) => {
    if (seen.has(id)) return false;
    seen.add(id);
    if (seen.size > REMEMBERED) seen.delete(seen.values().next().value as string);
    return true;
  };
  const follow = async (prefix: string) => {
    while (!closing.aborted) {
      try {
        const from = (await store.revision({ signal: closing })) + 1;
        for await (const ev of store.watch(prefix, from, { signal: closing })) {
          if (ev.type !== "put") continue;
          let c: Counted;
          try {
            c = classify(ev.key, ev.value);
          } catch {
            continue; // an undecodable record is the reader's problem, not the metrics'
          }
          if (c === undefined) continue;
          if (typeof c === "function") {
            if (remember(ev.key)) c();
          } else if (remember(c.id)) c.count();
        }
      } catch (err) {
        if (closing.aborted) return;
        logger.warn({ err, prefix }, "metrics: store watch failed; following again");
        await sleep(1000, undefined, { signal: closing }).catch(() => undefined);
      }
    }
  };
  await Promise.all([follow("migrations/"), follow("replication/status/")]);
}
