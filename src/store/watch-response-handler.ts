/**
 * What one etcd watch response means for a watch's feed: a cancellation
 * ends it (compacted, or unavailable), the creation confirms it, a periodic
 * progress vouches for a revision, and the events are queued. Runs for
 * every response of every watch.
 */
import type { IWatchResponse } from "etcd3";
import { RpcError } from "../core/index.js";
import type { WatchQueue } from "./watch-queue.js";

/** The feed's parts a response acts on. */
export interface WatchResponseDeps {
  readonly queue: WatchQueue;
  /** Ends the watch with `err`. */
  readonly fail: (err: RpcError) => void;
  /** etcd confirmed the watch. */
  readonly confirmed: () => void;
  /** Wakes the feed's reader. */
  readonly notify: () => void;
}

/** Creates the handler of a watch's responses (one per feed, not per response). */
export function createWatchResponseHandler(deps: WatchResponseDeps): (res: IWatchResponse) => void {
  const { queue, fail, confirmed, notify } = deps;
  return (res) => {
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
}
