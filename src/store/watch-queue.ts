import type { IEvent } from "etcd3";
import type { WatchEvent } from "./kv-store.js";

/** A watcher further behind than this many events is ended instead of buffering without bound. */
export const MAX_WATCH_BACKLOG = 100_000;

/**
 * One watch's events in order, across the streams it is reopened on: a
 * resumed stream replays the last revision, and what was queued already is
 * skipped (one transaction writes several keys at one revision).
 */
export interface WatchQueue {
  /** The revision a new stream starts at: the last queued one again when only part of it may have arrived. */
  resumeFrom(): number;
  /** A new stream: its events are counted from its own start. */
  restart(): void;
  /** Queues the events not queued yet; false when more than MAX_WATCH_BACKLOG are waiting. */
  accept(events: readonly IEvent[]): boolean;
  /**
   * etcd says every event up to `revision` was sent (a progress response):
   * a new stream starts after it. A watch of a quiet prefix then survives a
   * compaction past its last event: resumed from that event, etcd would
   * refuse it as compacted though nothing was missed.
   */
  progressed(revision: number): void;
  /** The next queued event, or undefined when none is. */
  take(): WatchEvent | undefined;
}

/** Creates a {@link WatchQueue} whose first event is at `fromRevision` or later. */
export function createWatchQueue(
  fromRevision: number,
  toWatchEvent: (ev: IEvent) => WatchEvent,
): WatchQueue {
  let queue: (WatchEvent | undefined)[] = [];
  let head = 0;
  // Position of the last queued event: its revision and how many events of that revision are queued.
  let acceptedRev = fromRevision - 1;
  let acceptedCount = 0;
  /** Position in the current stream. */
  let position = { rev: 0, index: 0 };
  return {
    resumeFrom: () => (acceptedCount > 0 ? acceptedRev : acceptedRev + 1),
    restart() {
      position = { rev: 0, index: 0 };
    },
    accept(events) {
      for (const ev of events) {
        const rev = Number(ev.kv.mod_revision);
        if (rev === position.rev) position.index++;
        else position = { rev, index: 0 };
        if (rev < acceptedRev) continue;
        if (rev === acceptedRev && position.index < acceptedCount) continue;
        if (rev > acceptedRev) {
          acceptedRev = rev;
          acceptedCount = 0;
        }
        acceptedCount++;
        queue.push(toWatchEvent(ev));
      }
      return queue.length - head <= MAX_WATCH_BACKLOG;
    },
    progressed(revision) {
      if (revision <= acceptedRev) return;
      acceptedRev = revision;
      acceptedCount = 0;
    },
    take() {
      if (head >= queue.length) return undefined;
      const ev = queue[head] as WatchEvent;
      queue[head] = undefined;
      head++;
      if (head >= 1024 && head * 2 >= queue.length) {
        queue = queue.slice(head);
        head = 0;
      }
      return ev;
    },
  };
}
