import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import type { KeyValue, KvStore } from "./kv-store.js";
import { keyValueOf, rangeAll } from "./typed-store.js";

/** An in-memory copy of every key under a prefix, kept current by a watch. */
export interface PrefixMirror<T> {
  /** Current values by key (without the prefix). */
  values(): ReadonlyMap<string, T>;
  /**
   * Since when (Date.now() milliseconds) the copy may be behind the store: its
   * watch ended and no reload has succeeded since. Undefined while following.
   */
  staleSince(): number | undefined;
  /**
   * A store revision every change up to which is in the copy (the revision
   * it was loaded at, or one below the newest event applied: a
   * transaction's events come one by one).
   */
  revision(): number;
  /**
   * Called after every change, with the key that changed (without the
   * prefix), or undefined after a reload (anything may have changed);
   * returns the function that stops it.
   */
  onChange(listener: (key: string | undefined) => void): () => void;
  close(): void;
}

/**
 * Loads every key under `prefix`, then follows the store from the revision
 * it read at, so no change falls between the load and the watch. When the
 * watch fails (store restarted, history compacted) it reloads and follows
 * again; meanwhile the last known values stay in force.
 */
export async function mirrorPrefix<T>(
  store: KvStore,
  prefix: string,
  decode: (kv: KeyValue) => T,
  logger: Logger,
): Promise<PrefixMirror<T>> {
  const values = new Map<string, T>();
  const listeners: ((key: string | undefined) => void)[] = [];
  const stop = new AbortController();
  let staleSince: number | undefined;
  let upTo = 0;
  const changed = (key?: string) => {
    for (const l of listeners) l(key);
  };
  const load = async () => {
    const revision = await store.revision();
    const fresh = new Map<string, T>();
    for await (const kv of rangeAll(store, prefix))
      fresh.set(kv.key.slice(prefix.length), decode(kv));
    values.clear();
    for (const [k, v] of fresh) values.set(k, v);
    upTo = revision;
    return revision;
  };
  const follow = async (from: number) => {
    let next = from;
    while (!stop.signal.aborted) {
      try {
        for await (const e of store.watch(prefix, next, { signal: stop.signal })) {
          const key = e.key.slice(prefix.length);
          if (e.type === "delete") values.delete(key);
          else values.set(key, decode(keyValueOf(e)));
          next = e.revision + 1;
          upTo = Math.max(upTo, e.revision - 1);
          changed(key);
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        staleSince ??= Date.now();
        logger.warn({ err, prefix }, "watch ended; reloading");
        await sleep(1000, undefined, { signal: stop.signal, ref: false }).catch(() => {});
        try {
          next = (await load()) + 1;
          staleSince = undefined;
          changed();
        } catch (loadErr) {
          logger.error({ err: loadErr, prefix }, "reload failed; keeping the last known values");
        }
      }
    }
  };
  void follow((await load()) + 1);
  return {
    values: () => values,
    staleSince: () => staleSince,
    revision: () => upTo,
    onChange(listener) {
      listeners.push(listener);
      return () => {
        const i = listeners.indexOf(listener);
        if (i >= 0) listeners.splice(i, 1);
      };
    },
    close: () => stop.abort(),
  };
}
