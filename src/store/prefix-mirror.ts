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
  /**
   * Notes this process's own write of `key` at store revision `rev`
   * (`value` undefined: a delete), so the copy shows it before the watch
   * brings it; changes are then listened to as any other. The watch's event
   * of that write is not decoded again, and events older than it are not
   * applied over it. A write the watch has brought already is replaced by
   * `value` (one copy in memory, the caller's). Ignored when the copy holds
   * that key at a later revision. Needs `revisionOf`.
   */
  wrote(key: string, rev: number, value: T | undefined): void;
  close(): void;
}

/** Options of {@link mirrorPrefix}. */
export interface MirrorOptions<T> {
  /** The store revision a value was written at: needed by {@link PrefixMirror.wrote}. */
  readonly revisionOf?: (value: T) => number;
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
  options: MirrorOptions<T> = {},
): Promise<PrefixMirror<T>> {
  const values = new Map<string, T>();
  /** This process's own writes the watch has not brought yet, by key. */
  const ahead = new Map<string, { rev: number; value: T | undefined }>();
  const show = (key: string, value: T | undefined) => {
    if (value === undefined) values.delete(key);
    else values.set(key, value);
  };
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
    // Own writes after the load's revision stay shown; the watch from it brings them.
    for (const [k, p] of ahead)
      if (p.rev <= revision) ahead.delete(k);
      else show(k, p.value);
    upTo = revision;
    return revision;
  };
  const follow = async (from: number) => {
    let next = from;
    while (!stop.signal.aborted) {
      try {
        for await (const e of store.watch(prefix, next, { signal: stop.signal })) {
          const key = e.key.slice(prefix.length);
          next = e.revision + 1;
          upTo = Math.max(upTo, e.revision - 1);
          const mine = ahead.get(key);
          // This process's own write (shown already), or an older one it went past.
          if (mine !== undefined && e.revision <= mine.rev) {
            if (e.revision === mine.rev) ahead.delete(key);
            continue;
          }
          ahead.delete(key);
          show(key, e.type === "delete" ? undefined : decode(keyValueOf(e)));
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
    wrote(key, rev, value) {
      const { revisionOf } = options;
      if (revisionOf === undefined)
        throw new Error(`mirror of ${prefix}: wrote() needs revisionOf`);
      const pending = ahead.get(key);
      if (pending !== undefined && pending.rev >= rev) return;
      const cur = values.get(key);
      const curRev = pending?.rev ?? (cur === undefined ? undefined : revisionOf(cur));
      if (curRev !== undefined && curRev > rev) return;
      if (curRev === rev) {
        // The watch brought this very write first: the caller's copy replaces the decoded one.
        if (value !== undefined && cur !== undefined) values.set(key, value);
        return;
      }
      // Everything up to upTo is in the copy: this write, or something later (a delete).
      if (rev <= upTo) return;
      ahead.set(key, { rev, value });
      show(key, value);
      changed(key);
    },
    close: () => stop.abort(),
  };
}
