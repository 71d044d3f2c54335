// The SQLite backend's write path: writes queue up while a batch is being
// prepared and commit together in one transaction (one fsync), each at its
// own revision; none is acknowledged before the batch commits, and watchers
// hear of the batch's events only after that.

import type Database from "better-sqlite3";
import { abortError, type Logger, RpcError } from "../core/index.js";
import type { StoreCallOptions, WatchEvent } from "./kv-store.js";
import type { SqliteStatements } from "./sqlite-database.js";
import { throwIfAborted } from "./store-checks.js";

/** What one write did inside the batch transaction. */
export interface AppliedWrite {
  readonly result: unknown;
  readonly events: WatchEvent[];
  /** Whether the write took the revision it was offered (a no-op write does not). */
  readonly consumedRevision: boolean;
}

/** Applies a write inside the batch transaction at `revision`; throws an RpcError to refuse it alone. */
export type ApplyWrite = (revision: number) => AppliedWrite;

/** State the SQLite store's parts share; only the write queue and close change it. */
export interface SqliteStoreState {
  /** The last committed revision. */
  revision: number;
  /** Set by close: new writes are refused and the lease sweep does nothing. */
  closed: boolean;
  /** Told of each committed batch's events, in revision order. */
  readonly watchers: Set<(events: readonly WatchEvent[]) => void>;
}

/** The write queue of {@link createSqliteWriteQueue}. */
export interface SqliteWriteQueue {
  /** Queues a write for the next batch; resolves with its result once the batch has committed. */
  enqueue<T>(apply: ApplyWrite, options: StoreCallOptions | undefined): Promise<T>;
  /** Commits the queued writes now, if there are any (for close). */
  flushPending(): void;
}

interface PendingWrite {
  /** Applies the write inside the batch transaction at `revision`; returns its result and events. */
  apply: ApplyWrite;
  resolve(result: unknown): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
}

/**
 * Creates the batching write queue over `db`; every `history` revisions'
 * worth of old events is compacted away in the same transaction.
 */
export function createSqliteWriteQueue(
  db: Database.Database,
  stmt: SqliteStatements,
  log: Logger,
  history: number,
  state: SqliteStoreState,
): SqliteWriteQueue {
  const applyInSavepoint = db.transaction((w: PendingWrite, rev: number) => w.apply(rev));
  let queue: PendingWrite[] = [];
  let flushScheduled = false;

  /** Runs every queued write in one transaction: one commit, one fsync. */
  const flush = () => {
    flushScheduled = false;
    const batch = queue.filter((w) => {
      if (w.signal?.aborted) {
        w.reject(abortError(w.signal));
        return false;
      }
      return true;
    });
    queue = [];
    if (batch.length === 0) return;
    const outcomes: ({ ok: true; result: unknown } | { ok: false; error: RpcError })[] = [];
    const events: WatchEvent[] = [];
    const revision = state.revision;
    let next = revision;
    try {
      db.transaction(() => {
        for (const w of batch) {
          // Each write in its own savepoint: a write refused for its own reason
          // (an expired lease) is rolled back alone and the batch goes on.
          try {
            const out = applyInSavepoint(w, next + 1);
            if (out.consumedRevision) next += 1;
            outcomes.push({ ok: true, result: out.result });
            events.push(...out.events);
          } catch (err) {
            if (!(err instanceof RpcError)) throw err;
            outcomes.push({ ok: false, error: err });
          }
        }
        if (next !== revision) {
          stmt.setMeta.run("revision", next);
          if (Math.floor(next / 1000) > Math.floor(revision / 1000) && next > history) {
            stmt.compact.run(next - history);
            stmt.setMeta.run("compacted", next - history - 1);
          }
        }
      })();
    } catch (err) {
      log.error(
        { err, writes: batch.length },
        "state store write failed; nothing in the batch was applied",
      );
      const failure = new RpcError("STORE_UNAVAILABLE", { cause: err });
      for (const w of batch) w.reject(failure);
      return;
    }
    state.revision = next;
    batch.forEach((w, i) => {
      const outcome = outcomes[i];
      if (outcome?.ok) w.resolve(outcome.result);
      else w.reject(outcome?.error ?? new RpcError("INTERNAL"));
    });
    if (events.length > 0) for (const notify of state.watchers) notify(events);
  };

  const enqueue = <T>(apply: ApplyWrite, options: StoreCallOptions | undefined): Promise<T> => {
    if (state.closed)
      return Promise.reject(
        new RpcError("STORE_UNAVAILABLE", { cause: new Error("store closed") }),
      );
    throwIfAborted(options);
    return new Promise<T>((resolve, reject) => {
      queue.push({
        apply,
        resolve: resolve as (r: unknown) => void,
        reject,
        signal: options?.signal,
      });
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    });
  };

  return {
    enqueue,
    flushPending() {
      if (queue.length > 0) flush();
    },
  };
}
