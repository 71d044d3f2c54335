import { castGrpcError, type Etcd3, type IEvent, type IWatchResponse } from "etcd3";
import { RpcError } from "../core/index.js";
import { closedError } from "./etcd-calls.js";
import type { EtcdStoreConfig } from "./etcd-options.js";
import type { StoreCallOptions, WatchEvent } from "./kv-store.js";
import { prefixEnd } from "./store-checks.js";
import { createStreamSilence } from "./stream-silence.js";

/** A watcher further behind than this many events is ended instead of buffering without bound. */
const MAX_WATCH_BACKLOG = 100_000;
const WATCH_BACKOFF_MS = { first: 100, max: 2000 };
/**
 * A watch stream that said nothing for WATCH_QUIET_MS is asked for its
 * progress; one that does not answer within WATCH_SILENT_MS is reopened on
 * another member (a stopped member holds its streams open and says nothing).
 * Checked every WATCH_CHECK_MS.
 */
const WATCH_QUIET_MS = 3000;
const WATCH_SILENT_MS = 5000;
const WATCH_CHECK_MS = 1000;
/** How long one attempt waits for etcd to confirm a watch before trying another member (within the reconnect budget). */
const WATCH_CONFIRM_MS = 2500;
// An attempt cut short there does not count against the budget: the next
// one, on another member, gets all of it (an etcd slow everywhere, answering
// in 3.5 s, still confirms then).
const EMPTY = new Uint8Array(0);

type WatchStream = Awaited<ReturnType<Etcd3["watchClient"]["watch"]>>;

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
  const watches = new Set<{
    fail(err: RpcError): void;
    check(): void;
  }>();
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
    const range = { key: rangeStart(first), range_end: Buffer.from(prefixEnd(first)) };
    const state = {
      queue: [] as (WatchEvent | undefined)[],
      head: 0,
      failure: undefined as RpcError | undefined,
      wake: undefined as (() => void) | undefined,
      // Position of the last queued event: its revision and how many events of
      // that revision are queued (one txn writes several keys at one revision).
      acceptedRev: start - 1,
      acceptedCount: 0,
      stream: undefined as WatchStream | undefined,
      /** etcd confirmed the current stream's watch. */
      created: false,
      /** An attempt of this outage was cut short for a late confirmation (the next gets the whole budget). */
      cut: false,
      /** The stream whose member this outage's attempts keep off, until one is confirmed. */
      avoid: undefined as object | undefined,
      /**
       * This outage began with a silent stream, not an error: once its cut
       * attempt is spent, the next waits for etcd as long as it takes (every
       * member may be paused), as a watch on a silent stream always did.
       */
      patient: false,
      generation: 0,
      timer: undefined as NodeJS.Timeout | undefined,
      outageSince: Date.now() as number | undefined,
      backoffMs: WATCH_BACKOFF_MS.first,
      stopped: false,
    };
    const notify = () => {
      const wake = state.wake;
      state.wake = undefined;
      wake?.();
    };
    const dropStream = () => {
      state.generation++;
      clearTimeout(state.timer);
      state.timer = undefined;
      const stream = state.stream;
      state.stream = undefined;
      if (stream) {
        // end() first: etcd3 resets every connection to the host when a still
        // writable stream reports the cancellation as an error.
        stream.end();
        stream.cancel();
      }
    };
    const fail = (err: RpcError) => {
      if (state.stopped || state.failure) return;
      state.failure = err;
      dropStream();
      notify();
    };
    /** Connects again after a backoff, on another member than `avoid`'s when given. */
    const retry = (cause: unknown, avoid?: object) => {
      if (state.stopped || state.failure) return;
      dropStream();
      state.outageSince ??= Date.now();
      const left = state.outageSince + config.dialTimeoutMs - Date.now();
      if (left <= 0) return fail(new RpcError("STORE_UNAVAILABLE", { cause }));
      const wait = Math.min(state.backoffMs, left);
      state.backoffMs = Math.min(state.backoffMs * 2, WATCH_BACKOFF_MS.max);
      if (avoid !== undefined) state.avoid = avoid;
      state.timer = setTimeout(connect, wait);
    };
    /** The stream failed: a real disconnect, which the reconnect budget bounds. */
    const broken = (cause: unknown) => {
      state.patient = false;
      retry(cause);
    };
    /** Reopens the watch at once on another member than its stream's. */
    const move = () => {
      const on = state.stream;
      if (state.stopped || state.failure || on === undefined) return;
      dropStream();
      state.outageSince ??= Date.now();
      state.avoid = on;
      state.patient = true;
      connect();
    };
    const silence = createStreamSilence({
      quietMs: WATCH_QUIET_MS,
      silentMs: WATCH_SILENT_MS,
      ask: () => state.stream?.write({ progress_request: {} }),
      silent: move,
    });
    const onResponse = (res: IWatchResponse, position: { rev: number; index: number }) => {
      if (res.canceled) {
        const compacted = Number(res.compact_revision);
        return fail(
          compacted > 0
            ? new RpcError("WATCH_COMPACTED", {
                cause: new Error(`etcd history is compacted up to revision ${compacted}`),
              })
            : new RpcError("STORE_UNAVAILABLE", {
                cause: new Error(`etcd cancelled the watch: ${res.cancel_reason}`),
              }),
        );
      }
      if (res.created) {
        state.created = true;
        state.cut = false;
        state.avoid = undefined;
        state.patient = false;
        clearTimeout(state.timer);
        state.timer = undefined;
        state.outageSince = undefined;
        state.backoffMs = WATCH_BACKOFF_MS.first;
      }
      for (const ev of res.events) {
        const rev = Number(ev.kv.mod_revision);
        if (rev === position.rev) position.index++;
        else {
          position.rev = rev;
          position.index = 0;
        }
        // A resumed stream replays the last revision: skip what was queued already.
        if (rev < state.acceptedRev) continue;
        if (rev === state.acceptedRev && position.index < state.acceptedCount) continue;
        if (rev > state.acceptedRev) {
          state.acceptedRev = rev;
          state.acceptedCount = 0;
        }
        state.acceptedCount++;
        state.queue.push(toWatchEvent(ev));
      }
      if (state.queue.length - state.head > MAX_WATCH_BACKLOG) {
        return fail(
          new RpcError("STORE_UNAVAILABLE", {
            message: "watcher fell too far behind; watch again",
          }),
        );
      }
      notify();
    };
    const connect = () => {
      state.timer = undefined;
      if (state.stopped || state.failure) return;
      const generation = ++state.generation;
      const current = () => generation === state.generation;
      // Resume at the last queued revision when only part of it may have arrived.
      const resumeFrom = state.acceptedCount > 0 ? state.acceptedRev : state.acceptedRev + 1;
      const position = { rev: 0, index: 0 };
      open(state.avoid).then(
        (stream) => {
          if (!current()) {
            stream.end();
            stream.cancel();
            return;
          }
          state.stream = stream;
          state.created = false;
          silence.heard();
          stream.on("data", (res) => {
            if (!current()) return;
            silence.heard();
            onResponse(res, position);
          });
          stream.on("error", (err) => current() && broken(castGrpcError(err)));
          stream.on("end", () => current() && broken(new Error("etcd ended the watch stream")));
          stream.write({
            create_request: { ...range, start_revision: resumeFrom, progress_notify: false },
          });
          // Not the whole budget on one member, once an outage: a stopped one never confirms.
          const left = (state.outageSince ?? Date.now()) + config.dialTimeoutMs - Date.now();
          const cut = elsewhere && !state.cut && left > WATCH_CONFIRM_MS;
          if (!cut && state.patient) {
            // Waits for the confirmation or an error; an error starts a new budget.
            state.outageSince = undefined;
            return;
          }
          state.timer = setTimeout(
            () => {
              if (!current()) return;
              if (cut) {
                state.cut = true;
                state.outageSince = Date.now();
              }
              retry(new Error("etcd did not confirm the watch in time"), stream);
            },
            cut ? WATCH_CONFIRM_MS : Math.max(left, 1),
          );
        },
        (err: unknown) => current() && broken(err),
      );
    };

    const handle = {
      fail,
      check() {
        if (elsewhere && state.stream !== undefined && state.created && !state.stopped)
          silence.check();
      },
    };
    const onAbort = () => notify();
    signal.addEventListener("abort", onAbort);
    watches.add(handle);
    if (checking === undefined) {
      checking = setInterval(checkAll, WATCH_CHECK_MS);
      checking.unref();
    }
    connect();
    try {
      for (;;) {
        if (signal.aborted) return;
        if (state.head < state.queue.length) {
          const ev = state.queue[state.head] as WatchEvent;
          state.queue[state.head] = undefined;
          state.head++;
          if (state.head >= 1024 && state.head * 2 >= state.queue.length) {
            state.queue.splice(0, state.head);
            state.head = 0;
          }
          yield ev;
          continue;
        }
        // Events queued before a failure are still delivered: they are in order and complete.
        if (state.failure) throw state.failure;
        await new Promise<void>((resolve) => {
          state.wake = resolve;
        });
      }
    } finally {
      state.stopped = true;
      watches.delete(handle);
      signal.removeEventListener("abort", onAbort);
      dropStream();
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
