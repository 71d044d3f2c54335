/**
 * One etcd watch's stream, reopened after a disconnect and moved off a
 * silent member; its responses are handled in `watch-response-handler.ts`.
 */
import type { Etcd3, IEvent } from "etcd3";
import { RpcError } from "../core/index.js";
import { etcd3 } from "./etcd3-module.js";
import type { WatchEvent } from "./kv-store.js";
import { createStreamSilence } from "./stream-silence.js";
import { createWatchOutage } from "./watch-outage.js";
import { createWatchQueue } from "./watch-queue.js";
import { createWatchResponseHandler } from "./watch-response-handler.js";

/**
 * A watch stream that said nothing for WATCH_QUIET_MS is asked for its
 * progress; one that does not answer within WATCH_SILENT_MS is reopened on
 * another member (a stopped member holds its streams open and says nothing).
 */
const WATCH_QUIET_MS = 3000;
const WATCH_SILENT_MS = 5000;

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

/** Opens a {@link WatchFeed}: the stream is opened at once. */
export function openWatchFeed(options: WatchFeedOptions): WatchFeed {
  const { open, elsewhere, budgetMs, range, toWatchEvent } = options;
  const queue = createWatchQueue(options.fromRevision, toWatchEvent);
  const outage = createWatchOutage({ elsewhere, budgetMs });
  const state = {
    failure: undefined as RpcError | undefined,
    wake: undefined as (() => void) | undefined,
    stream: undefined as WatchStream | undefined,
    /** etcd confirmed the current stream's watch. */
    created: false,
    generation: 0,
    timer: undefined as NodeJS.Timeout | undefined,
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
    const wait = outage.retryIn(avoid);
    if (wait === undefined) return fail(new RpcError("STORE_UNAVAILABLE", { cause }));
    state.timer = setTimeout(connect, wait);
  };
  /** The stream failed: a real disconnect, which the reconnect budget bounds. */
  const broken = (cause: unknown) => {
    outage.broken();
    retry(cause);
  };
  /** Reopens the watch at once on another member than its stream's. */
  const move = () => {
    const on = state.stream;
    if (state.stopped || state.failure || on === undefined) return;
    dropStream();
    outage.moved(on);
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
    outage.confirmed();
    state.created = true;
    clearTimeout(state.timer);
    state.timer = undefined;
  };
  const onResponse = createWatchResponseHandler({ queue, fail, confirmed, notify });
  /** Waits for the new stream's confirmation as long as the outage's rules say. */
  const awaitConfirmation = (stream: WatchStream, current: () => boolean) => {
    const wait = outage.confirmation();
    if (wait === undefined) return;
    state.timer = setTimeout(() => {
      if (!current()) return;
      outage.unconfirmed(wait.cut);
      retry(new Error("etcd did not confirm the watch in time"), stream);
    }, wait.waitMs);
  };
  const connect = () => {
    state.timer = undefined;
    if (state.stopped || state.failure) return;
    const generation = ++state.generation;
    const current = () => generation === state.generation;
    const resumeFrom = queue.resumeFrom();
    queue.restart();
    open(outage.avoid).then(
      (stream) => {
        if (!current()) {
          stream.end();
          stream.cancel();
          return;
        }
        state.stream = stream;
        state.created = false;
        outage.opened();
        silence.heard();
        stream.on("data", (res) => {
          if (!current()) return;
          silence.heard();
          onResponse(res);
        });
        stream.on("error", (err) => current() && broken(etcd3().castGrpcError(err)));
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
      // An unconfirmed stream is asked too, when the outage's rules allow (see WatchOutage).
      if (outage.mayAskUnconfirmed()) silence.check();
    },
    stop() {
      state.stopped = true;
      dropStream();
    },
  };
}
