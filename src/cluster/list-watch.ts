import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { RpcError } from "../core/index.js";

/** One object of a watched list, as the shared listing found it. */
export interface WatchEntry<T> {
  /** The object's identity in the list (a node id, a VM id, ...). */
  readonly key: string;
  readonly item: T;
  /** The tenants it belongs to ([]: none), for views that decide by tenant. */
  readonly tenants: readonly string[];
}

/** A change of one object in a watcher's view; `deleted` carries the last state it saw. */
export interface WatchChange<T> {
  readonly type: "added" | "modified" | "deleted";
  readonly item: T;
}

/** Everything up to `revision` has been sent. */
export interface WatchSynced {
  readonly type: "synced";
  readonly revision: string;
  /** Only changes since a revision the watcher had were sent (false: the whole view). */
  readonly resumed: boolean;
}

/** What a watcher sees of an entry: the object as shown to it, or undefined when it is not in its view. */
export type WatchView<T> = (entry: WatchEntry<T>) => T | undefined;

/** Options of {@link createListWatch}. */
export interface ListWatchOptions<T extends object> {
  /** Every object now, unfiltered, in the order its listing shows them. */
  readonly list: (signal: AbortSignal) => Promise<readonly WatchEntry<T>[]>;
  /** Equal for objects a watcher should not be told changed (volatile fields such as ages left out). */
  readonly digest: (item: T) => string;
  /** How often a watch looks again (default 1000 ms). */
  readonly intervalMs?: number;
  /** Objects kept across the revisions held for resuming (default 50,000; the oldest go first). */
  readonly historyObjects?: number;
  /** Objects one view may hold (default 10,000); more ends the watch with WATCH_TOO_LARGE. */
  readonly maxObjects?: number;
}

/** A list that watchers follow, each through its own view, resuming from revisions this process holds. */
export interface ListWatch<T> {
  /**
   * The view's objects, then `synced`, then each change as it is seen, a
   * `synced` after each batch. With `since` (a revision of an earlier
   * `synced` still held), only the changes since then come first. Changes
   * are computed when the consumer asks for more: a slow consumer gets the
   * latest state, never a backlog. Ends quietly when `signal` aborts.
   */
  watch(
    view: WatchView<T>,
    since: string,
    /**
     * Names the view (the caller's access): revisions carry it, and a watch
     * resumes only from one of the same view. A caller whose access changed
     * gets the whole list again, so what it may no longer see goes.
     */
    viewKey: string,
    signal: AbortSignal,
  ): AsyncGenerator<WatchChange<T> | WatchSynced>;
}

interface Snapshot<T> {
  readonly seq: number;
  /** When it was listed (process time), for sharing one listing between watchers. */
  at: number;
  entries: readonly WatchEntry<T>[];
  readonly digests: ReadonlyMap<string, string>;
}

/**
 * Watches a list by listing it again every interval and comparing (one
 * listing shared by every watcher of this process per interval), which also
 * catches changes no store write makes, such as a node's readiness lapsing
 * with time. Each distinct listing is a revision; recent ones are kept whole
 * so a watcher can resume from one exactly, through its own view (so a
 * tenant's resumed watch never learns of another tenant's objects).
 */
export function createListWatch<T extends object>(options: ListWatchOptions<T>): ListWatch<T> {
  const interval = options.intervalMs ?? 1000;
  const maxObjects = options.maxObjects ?? 10_000;
  const historyObjects = options.historyObjects ?? 50_000;
  // Revisions are `<epoch>-<seq>`: another process's (or an earlier life's) are unknown here.
  const epoch = randomUUID().slice(0, 8);
  const history: Snapshot<T>[] = [];
  let pending: Promise<Snapshot<T>> | undefined;
  const digests = new WeakMap<T, string>();
  const digestOf = (item: T) => {
    let d = digests.get(item);
    if (d === undefined) {
      d = options.digest(item);
      digests.set(item, d);
    }
    return d;
  };

  async function relist(): Promise<Snapshot<T>> {
    // Not any one watcher's signal: the listing is shared; bounded on its own.
    const entries = await options.list(AbortSignal.timeout(30_000));
    const now = performance.now();
    const map = new Map(entries.map((e) => [e.key, digestOf(e.item)]));
    const last = history.at(-1);
    if (last !== undefined && sameDigests(last.digests, map)) {
      last.at = now;
      last.entries = entries;
      return last;
    }
    const snap: Snapshot<T> = { seq: (last?.seq ?? 0) + 1, at: now, entries, digests: map };
    history.push(snap);
    let held = history.reduce((n, s) => n + s.entries.length, 0);
    while (history.length > 1 && held > historyObjects)
      held -= history.shift()?.entries.length ?? 0;
    return snap;
  }

  /** The newest listing, listed again unless one was made in the last half interval. */
  function current(): Promise<Snapshot<T>> {
    const last = history.at(-1);
    if (last !== undefined && performance.now() - last.at < interval / 2)
      return Promise.resolve(last);
    pending ??= relist().finally(() => {
      pending = undefined;
    });
    return pending;
  }

  return {
    async *watch(view, since, viewKey, signal) {
      // `<epoch>-<seq>[-<view>]`: another process's, or another view's, is not resumed from.
      const revision = (seq: number) => `${epoch}-${seq}${viewKey === "" ? "" : `-${viewKey}`}`;
      const held = (from: string): Snapshot<T> | undefined => {
        const [e, seq, key = ""] = from.split("-");
        return e === epoch && key === viewKey
          ? history.find((s) => String(s.seq) === seq)
          : undefined;
      };
      const shown = new Map<string, { item: T; digest: string }>();
      const show = (snap: Snapshot<T>): WatchChange<T>[] => {
        const out: WatchChange<T>[] = [];
        const seen = new Set<string>();
        for (const entry of snap.entries) {
          const item = view(entry);
          if (item === undefined || seen.has(entry.key)) continue;
          seen.add(entry.key);
          if (seen.size > maxObjects) throw new RpcError("WATCH_TOO_LARGE");
          const digest = digestOf(item);
          const before = shown.get(entry.key);
          if (before === undefined) out.push({ type: "added", item });
          else if (before.digest !== digest) out.push({ type: "modified", item });
          shown.set(entry.key, { item, digest });
        }
        for (const [key, before] of shown)
          if (!seen.has(key)) {
            out.push({ type: "deleted", item: before.item });
            shown.delete(key);
          }
        return out;
      };
      try {
        const base = since === "" ? undefined : held(since);
        if (base !== undefined) show(base);
        let snap = await current();
        yield* show(snap);
        yield { type: "synced", revision: revision(snap.seq), resumed: base !== undefined };
        for (;;) {
          await sleep(interval, undefined, { signal });
          snap = await current();
          const changes = show(snap);
          if (changes.length === 0) continue;
          yield* changes;
          yield { type: "synced", revision: revision(snap.seq), resumed: true };
        }
      } catch (err) {
        // The caller left or the daemon stops: the stream just ends.
        if (!signal.aborted) throw err;
      }
    },
  };
}

function sameDigests(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
