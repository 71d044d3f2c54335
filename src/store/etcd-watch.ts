import type { IEvent } from "etcd3";
import type { RpcError } from "../core/index.js";
import { closedError } from "./etcd-calls.js";
import type { EtcdStoreConfig } from "./etcd-options.js";
import { openWatchFeed, type WatchFeed, type WatchStream } from "./etcd-watch-feed.js";
import type { StoreCallOptions, WatchEvent } from "./kv-store.js";
import { prefixEnd } from "./store-checks.js";

/** How often every open watch is asked whether its stream went silent (etcd-watch-feed.ts). */
const WATCH_CHECK_MS = 1000;
const EMPTY = new Uint8Array(0);

/** What the watches of one etcd store need from it; all required, nothing is validated. */
export interface EtcdWatchOptions {
  /**
   * Opens a watch stream (every watch has its own), on another member than
   * `avoid` was opened on when one is in.
   */
  readonly open: (avoid: object | undefined) => Promise<WatchStream>;
  /**
   * Whether the store has other members to move a watch to. Without, a
   * stream is never given up for silence or a late confirmation: it would
   * only be opened again on the same etcd, against the reconnect budget.
   */
  readonly elsewhere: boolean;
  /** The store's resolved config: `prefix` is the key namespace, `dialTimeoutMs` the reconnect budget. */
  readonly config: EtcdStoreConfig;
  /** The first etcd key of a range starting at `key` (etcd refuses an empty key). */
  readonly rangeStart: (key: string) => Buffer;
  /** A store key from a full etcd key, the namespace removed. */
  readonly stripKey: (key: Buffer) => string;
  /** True once the store is closing; a new watch then fails with STORE_UNAVAILABLE. */
  readonly isClosing: () => boolean;
  /** The store's current revision, a linearizable read. */
  readonly revision: (opts: StoreCallOptions) => Promise<number>;
}

/** The watches of one etcd store. */
export interface EtcdWatch {
  /** `KvStore.watch` after its argument checks: starts on first `next()`, ends quietly when `signal` aborts. */
  events(
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent, void, undefined>;
  /** Ends every open watch with `err`, after the events it already queued. */
  failAll(err: RpcError): void;
}

/**
 * The watch machinery of the etcd store. Each watch uses its own etcd stream
 * and resumes after a disconnect from the last event it queued, without loss
 * or repeats, until it stays disconnected for `dialTimeoutMs`.
 */
export function createEtcdWatch(options: EtcdWatchOptions): EtcdWatch {
  const { open, elsewhere, config, rangeStart, stripKey, isClosing, revision } = options;
  const base = config.prefix;
  const watches = new Set<WatchFeed>();
  /** Asks every watch whether its stream went silent; runs while any watch is open. */
  let checking: NodeJS.Timeout | undefined;
  const checkAll = () => {
    for (const w of watches) w.check();
    if (watches.size === 0) {
      clearInterval(checking);
      checking = undefined;
    }
  };

  async function* events(
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent, void, undefined> {
    if (signal.aborted) return;
    if (isClosing()) throw closedError();
    let start = fromRevision;
    if (start === 0) {
      try {
        start = (await revision({ signal })) + 1;
      } catch (err) {
        if (signal.aborted) return;
        throw err;
      }
    }
    const first = base + prefix;
    const feed = openWatchFeed({
      open,
      elsewhere,
      budgetMs: config.dialTimeoutMs,
      range: { key: rangeStart(first), range_end: Buffer.from(prefixEnd(first)) },
      fromRevision: start,
      toWatchEvent,
    });
    const onAbort = () => feed.wake();
    signal.addEventListener("abort", onAbort);
    watches.add(feed);
    if (checking === undefined) {
      checking = setInterval(checkAll, WATCH_CHECK_MS);
      checking.unref();
    }
    try {
      for (;;) {
        if (signal.aborted) return;
        const ev = feed.take();
        if (ev !== undefined) {
          yield ev;
          continue;
        }
        // Events queued before a failure are still delivered: they are in order and complete.
        const failure = feed.failure();
        if (failure) throw failure;
        await feed.wait();
      }
    } finally {
      watches.delete(feed);
      signal.removeEventListener("abort", onAbort);
      feed.stop();
    }
  }

  const toWatchEvent = (ev: IEvent): WatchEvent => {
    const put = String(ev.type).toLowerCase() === "put";
    return {
      type: put ? "put" : "delete",
      key: stripKey(ev.kv.key),
      value: put ? new Uint8Array(ev.kv.value) : EMPTY,
      revision: Number(ev.kv.mod_revision),
      ...(put && ev.kv.lease !== "0" && ev.kv.lease !== "" && { lease: String(ev.kv.lease) }),
    };
  };

  return {
    events,
    failAll(err) {
      for (const w of [...watches]) w.fail(err);
    },
  };
}
