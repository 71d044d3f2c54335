import { castGrpcError, type Etcd3, type IEvent, type IWatchResponse } from "etcd3";
import { RpcError } from "../core/index.js";
import type { WatchEvent } from "./kv-store.js";
import { createStreamSilence } from "./stream-silence.js";
import { createWatchQueue } from "./watch-queue.js";

const WATCH_BACKOFF_MS = { first: 100, max: 2000 };
/**
 * A watch stream that said nothing for WATCH_QUIET_MS is asked for its
 * progress; one that does not answer within WATCH_SILENT_MS is reopened on
 * another member (a stopped member holds its streams open and says nothing).
 */
const WATCH_QUIET_MS = 3000;
const WATCH_SILENT_MS = 5000;
/** How long one attempt waits for etcd to confirm a watch before trying another member (within the reconnect budget). */
const WATCH_CONFIRM_MS = 2500;
// An attempt cut short there does not count against the budget: the next
// one, on another member, gets all of it (an etcd slow everywhere, answering
// in 3.5 s, still confirms then).

/** One etcd watch stream, as the etcd3 client opens it. */
export type WatchStream = Awaited<ReturnType<Etcd3["watchClient"]["watch"]>>;

/** What one watch's feed needs; nothing is validated. */
export interface WatchFeedOptions {
  /** Opens a watch stream on another member than `avoid` was opened on, when one is in. */
  readonly open: (avoid: object | undefined) => Promise<WatchStream>;
  /** Whether there are other members to move the watch to (see EtcdWatchOptions). */
  readonly elsewhere: boolean;
  /** How long the watch may stay disconnected before it ends with STORE_UNAVAILABLE. */
  readonly budgetMs: number;
  /** The etcd key range watched. */
  readonly range: { readonly key: Buffer; readonly range_end: Buffer };
  /** The first revision delivered. */
  readonly fromRevision: number;
  /** Converts an etcd event. */
  readonly toWatchEvent: (ev: IEvent) => WatchEvent;
}

/**
 * One watch's events, queued as its etcd stream brings them. The stream is
 * reopened after a disconnect (resuming after the last event queued, so
 * nothing is lost or repeated) until it stays disconnected for the budget,
 * and moved to another member when it goes silent.
 */
export interface WatchFeed {
  /** The next queued event, or undefined when none is. */
  take(): WatchEvent | undefined;
  /** Why the watch ended, once it has: the events queued before it are still taken first. */
  failure(): RpcError | undefined;
  /** Resolves at the next event, failure or {@link WatchFeed.wake}. */
  wait(): Promise<void>;
  /** Resolves a pending {@link WatchFeed.wait}. */
  wake(): void;
  /** Ends the watch with `err`. */
  fail(err: RpcError): void;
  /** Asks the stream for its progress when it has been quiet, or moves it when it stays silent. */
  check(): void;
  /** Closes the stream; nothing more is queued. */
  stop(): void;
}

/** How long an unconfirmed patient stream is left before it may be asked, after `moves` moves in its outage. */
function patientGraceMs(moves: number): number {
  return moves <= 1 ? 0 : Math.min(60_000, 8000 * 2 ** (moves - 2));
}

/** Durations of the reconnect budget: monotonic, so a wall-clock step neither stretches nor cuts it. */
const now = () => performance.now();

/** Opens a {@link WatchFeed}: the stream is opened at once. */
export function openWatchFeed(options: WatchFeedOptions): WatchFeed {
  const { open, elsewhere, budgetMs, range, toWatchEvent } = options;
  const queue = createWatchQueue(options.fromRevision, toWatchEvent);
  const state = {
    failure: undefined as RpcError | undefined,
    wake: undefined as (() => void) | undefined,
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
    /** Moves for silence in this outage; each unconfirmed stream after the first is given longer. */
    moves: 0,
    /** When the current stream was opened (monotonic). */
    openedAt: 0,
    generation: 0,
    timer: undefined as NodeJS.Timeout | undefined,
    outageSince: now() as number | undefined,
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
    state.outageSince ??= now();
    const left = state.outageSince + budgetMs - now();
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
    state.outageSince ??= now();
    state.avoid = on;
    state.patient = true;
    state.moves++;
    connect();
  };
  const silence = createStreamSilence({
    quietMs: WATCH_QUIET_MS,
    silentMs: WATCH_SILENT_MS,
    ask: () => state.stream?.write({ progress_request: {} }),
    silent: move,
  });
  /** etcd confirmed the watch: the outage is over. */
  const confirmed = () => {
    state.moves = 0;
    state.created = true;
    state.cut = false;
    state.avoid = undefined;
    state.patient = false;
    clearTimeout(state.timer);
    state.timer = undefined;
    state.outageSince = undefined;
    state.backoffMs = WATCH_BACKOFF_MS.first;
  };
  const onResponse = (res: IWatchResponse) => {
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
    if (res.created) confirmed();
    // etcd's periodic progress (progress_notify), sent only to a watch that has been
    // brought up to date: every event up to its revision was sent. Not the answer to a
    // progress request (watch id -1): etcd 3.4 gives it the store's revision even while
    // the watch is still catching up, and events below it would then be skipped.
    else if (res.events.length === 0 && String(res.watch_id) !== "-1")
      queue.progressed(Number(res.header?.revision ?? 0));
    if (!queue.accept(res.events)) {
      return fail(
        new RpcError("STORE_UNAVAILABLE", { message: "watcher fell too far behind; watch again" }),
      );
    }
    notify();
  };
  /** Waits for the new stream's confirmation: a part of the budget, or all of it (see WATCH_CONFIRM_MS). */
  const awaitConfirmation = (stream: WatchStream, current: () => boolean) => {
    // Not the whole budget on one member, once an outage: a stopped one never confirms.
    const left = (state.outageSince ?? now()) + budgetMs - now();
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
          state.outageSince = now();
        }
        retry(new Error("etcd did not confirm the watch in time"), stream);
      },
      cut ? WATCH_CONFIRM_MS : Math.max(left, 1),
    );
  };
  const connect = () => {
    state.timer = undefined;
    if (state.stopped || state.failure) return;
    const generation = ++state.generation;
    const current = () => generation === state.generation;
    const resumeFrom = queue.resumeFrom();
    queue.restart();
    open(state.avoid).then(
      (stream) => {
        if (!current()) {
          stream.end();
          stream.cancel();
          return;
        }
        state.stream = stream;
        state.created = false;
        state.openedAt = now();
        silence.heard();
        stream.on("data", (res) => {
          if (!current()) return;
          silence.heard();
          onResponse(res);
        });
        stream.on("error", (err) => current() && broken(castGrpcError(err)));
        stream.on("end", () => current() && broken(new Error("etcd ended the watch stream")));
        stream.write({
          create_request: { ...range, start_revision: resumeFrom, progress_notify: true },
        });
        awaitConfirmation(stream, current);
      },
      (err: unknown) => current() && broken(err),
    );
  };
  connect();
  return {
    take: queue.take,
    failure: () => state.failure,
    wait: () =>
      new Promise<void>((resolve) => {
        state.wake = resolve;
      }),
    wake: notify,
    fail,
    check() {
      if (!elsewhere || state.stream === undefined || state.stopped) return;
      if (state.created) return silence.check();
      // A patient stream is watched before it is confirmed too: cut short on a slow member,
      // an outage's next attempt may be on the silent member it left, and would wait
      // there, never confirmed, until that member is back. Each one after the first in
      // an outage is given longer (8, 16, 32, then 60 s) before it is asked: with every
      // member answering late, a stream moved every 9 s would never be confirmed.
      if (state.patient && now() - state.openedAt >= patientGraceMs(state.moves)) silence.check();
    },
    stop() {
      state.stopped = true;
      dropStream();
    },
  };
}
