import {
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
} from "etcd3";
import { abortError } from "../core/index.js";

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** One keepalive sent and not yet answered; `done` once its caller has its answer or gave up. */
interface Slot {
  done: boolean;
  settle(ttl: number | Error): void;
}

/** One LeaseKeepAlive stream and what waits on it. */
interface Entry {
  readonly stream: Promise<KeepAliveStream>;
  /** Unanswered keepalives by lease id, oldest first (given-up ones keep their place). */
  readonly waiting: Map<string, Slot[]>;
  /** When the stream last answered, or when it was last idle. */
  answeredAt: number;
  /** Watches the stream's silence while keepalives wait on it. */
  silenceTimer: NodeJS.Timeout | undefined;
  failed: boolean;
}

/** Lease keepalives multiplexed on one etcd stream (see {@link createKeepAlives}). */
export interface KeepAlives {
  /** Renews lease `id`; resolves with its remaining TTL in seconds (0: no such lease). */
  keepAlive(id: string, deadline: number, signal: AbortSignal | undefined): Promise<number>;
  /** Ends the stream; keepalives still waiting fail with `err`. */
  close(err: Error): void;
}

/** How a {@link createKeepAlives} opens its stream and treats one that went silent. */
export interface KeepAliveStreamOptions {
  open(): Promise<KeepAliveStream>;
  toError(err: unknown): Error;
  /**
   * A stream that has answered nothing for this long while keepalives wait
   * on it is given up: its member is cut off or stopped, not merely slow.
   */
  silentMs: number;
  /** Told of a stream given up for its silence, before it is cancelled. */
  onSilent(stream: KeepAliveStream): void;
}

/**
 * Lease keepalives on one long-lived LeaseKeepAlive stream (a store spreads
 * its leases over a few of these), instead of a stream opened and closed per
 * keepalive: with thousands of nodes heartbeating, opening a gRPC stream per
 * renewal was a large share of the daemon's CPU per heartbeat.
 *
 * etcd answers one stream's requests one by one, in order, each with its
 * lease's id and remaining TTL, so answers are matched to requests per
 * lease, oldest first. A keepalive is sent once per stream: sending it again
 * on the same stream would only queue behind the first (under load at 10,000
 * agents, four copies of every slow keepalive loaded etcd further). It waits
 * for its answer until its deadline; a caller that gives up keeps its place,
 * so a late answer is never taken for a later request's.
 *
 * Slow is told from stopped by the stream as a whole: one that has answered
 * nothing for `silentMs` while keepalives wait on it is given up, its member
 * set aside (`onSilent`), and every keepalive on it fails as UNAVAILABLE, for
 * the store to send again on a new stream. A stream that fails or ends does
 * the same without the setting aside.
 */
export function createKeepAlives(options: KeepAliveStreamOptions): KeepAlives {
  const { open, toError, silentMs } = options;
  let current: Entry | undefined;

  const fail = (of: Entry, err: Error) => {
    if (current === of) current = undefined;
    of.failed = true;
    clearTimeout(of.silenceTimer);
    for (const slots of of.waiting.values()) for (const s of slots) s.settle(err);
    of.waiting.clear();
    void of.stream.then(
      (s) => {
        s.end();
        s.cancel();
      },
      () => undefined,
    );
  };

  /**
   * Checks the stream's silence at its limit. A timer that fires late, the
   * process having been busy, finds answers not yet read; they are read
   * before the verdict (setImmediate runs after the poll for I/O).
   */
  const watchSilence = (entry: Entry) => {
    if (entry.silenceTimer !== undefined || entry.failed) return;
    entry.silenceTimer = setTimeout(
      () => {
        entry.silenceTimer = undefined;
        if (entry.failed || entry.waiting.size === 0) return;
        if (Date.now() - entry.answeredAt < silentMs) return watchSilence(entry);
        setImmediate(() => {
          if (entry.failed || entry.waiting.size === 0) return;
          if (Date.now() - entry.answeredAt < silentMs) return watchSilence(entry);
          void entry.stream.then(options.onSilent, () => undefined);
          fail(
            entry,
            new GRPCUnavailableError(`etcd keepalive stream answered nothing for ${silentMs} ms`),
          );
        });
      },
      Math.max(0, entry.answeredAt + silentMs - Date.now()),
    );
    entry.silenceTimer.unref();
  };

  const connect = (): Entry => {
    const entry: Entry = {
      stream: open(),
      waiting: new Map(),
      answeredAt: Date.now(),
      silenceTimer: undefined,
      failed: false,
    };
    current = entry;
    entry.stream.then(
      (s) => {
        s.on("data", (res: ILeaseKeepAliveResponse) => {
          entry.answeredAt = Date.now();
          const id = String(res.ID);
          const slots = entry.waiting.get(id);
          const slot = slots?.shift();
          if (slots?.length === 0) entry.waiting.delete(id);
          slot?.settle(Number(res.TTL));
        });
        s.on("error", (err: unknown) => fail(entry, toError(err)));
        s.on("end", () => fail(entry, new GRPCUnavailableError("etcd ended the keepalive stream")));
      },
      (err: unknown) => fail(entry, toError(err)),
    );
    return entry;
  };

  return {
    keepAlive(id, deadline, signal) {
      const entry = current ?? connect();
      return new Promise<number>((resolve, reject) => {
        const slot: Slot = {
          done: false,
          settle(ttl) {
            if (slot.done) return;
            slot.done = true;
            clearTimeout(timer);
            signal?.removeEventListener("abort", onAbort);
            if (ttl instanceof Error) reject(ttl);
            else resolve(ttl);
          },
        };
        const onAbort = () => slot.settle(abortError(signal));
        // Past its deadline a keepalive fails alone, keeping its place for its late answer.
        const timer = setTimeout(
          () => slot.settle(new GRPCDeadlineExceededError("etcd keepalive: deadline exceeded")),
          Math.max(0, deadline - Date.now()),
        );
        signal?.addEventListener("abort", onAbort, { once: true });
        // Nothing outstanding until now: the stream's silence counts from here.
        if (entry.waiting.size === 0) entry.answeredAt = Date.now();
        const slots = entry.waiting.get(id);
        if (slots === undefined) entry.waiting.set(id, [slot]);
        else slots.push(slot);
        watchSilence(entry);
        entry.stream.then(
          (s) => {
            if (!slot.done) s.write({ ID: id });
            else {
              // Gave up before it was sent: no answer will come for it.
              const mine = entry.waiting.get(id);
              const at = mine?.indexOf(slot) ?? -1;
              if (at >= 0) mine?.splice(at, 1);
              if (mine?.length === 0) entry.waiting.delete(id);
            }
          },
          () => undefined,
        );
      });
    },
    close(err) {
      if (current !== undefined) fail(current, err);
    },
  };
}
