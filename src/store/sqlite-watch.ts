// The SQLite backend's watch: the backlog comes from the event log kept in
// the write transaction, then live events from the write queue's watchers,
// so a reader that watches from the revision it read at misses nothing.

import { RpcError } from "../core/index.js";
import type { WatchEvent } from "./kv-store.js";
import { EMPTY } from "./sqlite-apply.js";
import type { SqliteStatements } from "./sqlite-database.js";
import type { SqliteStoreState } from "./sqlite-write-queue.js";
import { checkPrefix, prefixEnd } from "./store-checks.js";
import { MAX_WATCH_BACKLOG } from "./watch-queue.js";

/**
 * Watches `prefix` from `fromRevision` (0: from the next write) until
 * `opts.signal` aborts; see {@link KvStore.watch}. WATCH_COMPACTED if the
 * history from there is gone.
 */
export async function* watchSqlite(
  stmt: SqliteStatements,
  state: SqliteStoreState,
  prefix: string,
  fromRevision: number,
  opts: { readonly signal: AbortSignal },
): AsyncGenerator<WatchEvent> {
  checkPrefix(prefix);
  if (opts.signal.aborted) return;
  const end = prefixEnd(prefix);
  let pending: (WatchEvent | undefined)[] = [];
  /** The next event to yield: taken by index, since shift() copies a large array each time. */
  let head = 0;
  let wake: (() => void) | undefined;
  let overflow = false;
  // Backlog and subscription are taken in one synchronous step: no write can commit in between.
  const compactedUpTo = Number(stmt.compacted.get() ?? 0);
  if (fromRevision > 0 && fromRevision <= compactedUpTo) throw new RpcError("WATCH_COMPACTED");
  const start = fromRevision > 0 ? fromRevision : state.revision + 1;
  for (const r of stmt.events.iterate(start, prefix, end) as Iterable<{
    rev: number;
    key: string;
    type: number;
    value: Buffer;
  }>) {
    // Bounded as live events are: a watch from far back (a caller's since_revision) read the
    // whole kept history into memory at once, before any bound applied.
    if (pending.length >= MAX_WATCH_BACKLOG)
      throw new RpcError("WATCH_COMPACTED", {
        message:
          "history from there is longer than a watch may hold; list again and watch from its revision",
      });
    pending.push({
      type: r.type === 0 ? "put" : "delete",
      key: r.key,
      value: r.type === 0 ? new Uint8Array(r.value) : EMPTY,
      revision: r.rev,
    });
  }
  const listener = (events: readonly WatchEvent[]) => {
    for (const e of events) if (e.key >= prefix && e.key < end) pending.push(e);
    if (pending.length - head > MAX_WATCH_BACKLOG) overflow = true;
    wake?.();
  };
  state.watchers.add(listener);
  const onAbort = () => wake?.();
  opts.signal.addEventListener("abort", onAbort);
  try {
    while (!opts.signal.aborted) {
      if (overflow)
        throw new RpcError("STORE_UNAVAILABLE", {
          message: "watcher fell too far behind; watch again",
        });
      if (head < pending.length) {
        const e = pending[head] as WatchEvent;
        pending[head++] = undefined;
        if (head >= 1024 && head * 2 >= pending.length) {
          pending = pending.slice(head);
          head = 0;
        }
        yield e;
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    state.watchers.delete(listener);
    opts.signal.removeEventListener("abort", onAbort);
  }
}
