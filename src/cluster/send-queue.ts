import { RpcError } from "../core/index.js";

/**
 * Messages waiting to go out on one stream, at most `max`. Pushing past the
 * bound closes the queue with STREAM_STALLED: a peer that does not read
 * loses its stream instead of growing the server's memory or slowing
 * anyone else. Read it with `for await`; the loop ends when the queue is
 * closed and drained, or throws the error it was closed with.
 */
export interface SendQueue<T> extends AsyncIterable<T> {
  /** False when the queue is closed (or just closed by this push overflowing it). */
  push(item: T): boolean;
  /** Ends the stream after what is queued (no error), or at once with `error`. */
  close(error?: Error): void;
  readonly closed: boolean;
  readonly size: number;
}

/** Creates a bounded queue for one stream. */
export function createSendQueue<T>(max: number): SendQueue<T> {
  const items: T[] = [];
  let closed = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    get closed() {
      return closed;
    },
    get size() {
      return items.length;
    },
    push(item) {
      if (closed) return false;
      if (items.length >= max) {
        this.close(new RpcError("STREAM_STALLED"));
        return false;
      }
      items.push(item);
      notify();
      return true;
    },
    close(error) {
      if (closed) return;
      closed = true;
      if (error !== undefined) {
        failure = error;
        items.length = 0;
      }
      notify();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (failure !== undefined) throw failure;
        const next = items.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (closed) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },
  };
}
