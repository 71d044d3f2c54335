import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from "etcd3";
import { abortError } from "../core/index.js";
import { etcd3 } from "./etcd3-module.js";

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** Copies of one keepalive at most: the first and two sent on after silences. */
const MAX_COPIES = 3;
/**
 * How long a silent stream must stay silent after another answered one of
 * its keepalives for its member to be reported. A healthy follower forwards
 * renewals to the leader: when the leader stops, the follower's streams
 * answer nothing until etcd's request timeout (5 s + 2 election timeouts,
 * 7 s by default) fails them, while a copy on the new leader is answered
 * at once. Longer than that, so only a member that says nothing at all is
 * reported.
 */
const REPORT_AFTER_MS = 8000;

/** One caller's keepalive: settled once, by its first copy answered, its deadline or its abort. */
interface Renewal {
  readonly deadline: number;
  done: boolean;
  /** The streams it was sent on, first one first. */
  readonly sentOn: Entry[];
  settle(ttl: number | Error): void;
}

/** One LeaseKeepAlive stream and what waits on it. */
interface Entry {
  readonly stream: Promise<KeepAliveStream>;
  /** Keepalives sent and not answered, by lease id, oldest first (given-up ones keep their place). */
  readonly waiting: Map<string, Renewal[]>;
  /** When the stream last answered, or when it was last idle. */
  answeredAt: number;
  /** When it was found silent and new keepalives went to another stream. */
  silentAt: number | undefined;
  /** Another stream answered one of its keepalives first; its member is reported if it stays silent. */
  suspected: boolean;
  /** The latest deadline of a keepalive sent on it: after it, nobody waits for its answers. */
  horizon: number;
  timer: NodeJS.Timeout | undefined;
  ended: boolean;
}

/** Lease keepalives multiplexed on one etcd stream (see {@link createKeepAlives}). */
export interface KeepAlives {
  /** Renews lease `id`; resolves with its remaining TTL in seconds (0: no such lease). */
  keepAlive(id: string, deadline: number, signal: AbortSignal | undefined): Promise<number>;
  /** Ends the streams; keepalives still waiting fail with `err`. */
  close(err: Error): void;
}

/** How a {@link createKeepAlives} opens its streams and treats one that went silent. */
export interface KeepAliveStreamOptions {
  /** Opens a stream; `avoid`, a silent stream whose member the new one should not be on. */
  open(avoid: KeepAliveStream | undefined): Promise<KeepAliveStream>;
  toError(err: unknown): Error;
  /** A stream that answers nothing for this long while keepalives wait on it is silent. */
  silentMs: number;
  /**
   * Told of a silent stream whose keepalives were answered on another
   * stream first, and which stayed silent 8 s more: its member, not etcd
   * as a whole, this process, nor a follower waiting on a lost leader,
   * stopped.
   */
  onSilent(stream: KeepAliveStream): void;
}

/**
 * Calls `silent` once `entry` has answered nothing for `silentMs` while
 * keepalives wait on it. A timer that fires late, the process having been
 * busy, finds answers not yet read; they are read before the verdict
 * (setImmediate runs after the poll for I/O).
 */
function watchSilence(entry: Entry, silentMs: number, silent: (entry: Entry) => void): void {
  if (entry.timer !== undefined || entry.ended || entry.silentAt !== undefined) return;
  if (entry.waiting.size === 0) return;
  const stillSilent = () =>
    !entry.ended &&
    entry.silentAt === undefined &&
    entry.waiting.size > 0 &&
    Date.now() - entry.answeredAt >= silentMs;
  const again = () => watchSilence(entry, silentMs, silent);
  entry.timer = setTimeout(
    () => {
      entry.timer = undefined;
      if (!stillSilent()) return again();
      setImmediate(() => (stillSilent() ? silent(entry) : again()));
    },
    Math.max(0, entry.answeredAt + silentMs - Date.now()),
  );
  entry.timer.unref();
}

/** A keepalive's {@link Renewal}, settling the caller's promise once: answer, deadline or abort. */
function newRenewal(
  deadline: number,
  signal: AbortSignal | undefined,
  resolve: (ttl: number) => void,
  reject: (err: Error) => void,
): Renewal {
  const r: Renewal = {
    deadline,
    done: false,
    sentOn: [],
    settle(ttl) {
      if (r.done) return;
      r.done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (ttl instanceof Error) reject(ttl);
      else resolve(ttl);
    },
  };
  const onAbort = () => r.settle(abortError(signal));
  // Past its deadline a keepalive fails, its copies keeping their places for late answers.
  const timer = setTimeout(
    () => r.settle(new (etcd3().GRPCDeadlineExceededError)("etcd keepalive: deadline exceeded")),
    Math.max(0, deadline - Date.now()),
  );
  signal?.addEventListener("abort", onAbort, { once: true });
  return r;
}

/**
 * Lease keepalives on one long-lived LeaseKeepAlive stream at a time (a
 * store spreads its leases over a few of these), instead of a stream opened
 * per keepalive: with thousands of nodes heartbeating, opening one per
 * renewal was a large share of the daemon's CPU per heartbeat.
 *
 * etcd answers one stream's requests one by one, in order, each with its
 * lease's id and remaining TTL, so answers are matched to requests per
 * lease, oldest first; a caller that gives up keeps its place, so a late
 * answer is never taken for a later request's. A keepalive is never sent
 * twice on one stream: the copy would only queue behind the first.
 *
 * A stream that answers nothing for `silentMs` while keepalives wait is
 * silent: its member may be stopped or cut off with its connection open, or
 * etcd (or this process) merely slow. Its waiting keepalives are sent again
 * on a new stream, kept off that member while it opens, and new ones go
 * there; the first copy answered settles each. Nothing fails for being
 * slow. A silent stream's member is set aside (`onSilent`) only when the new
 * stream answered one of its keepalives and it still said nothing (no
 * answer, no error) 8 s later, and the stream is closed once nobody waits
 * on it. A stream that fails or ends
 * fails the keepalives that have no other copy waiting (the store sends
 * them again).
 */
export function createKeepAlives(options: KeepAliveStreamOptions): KeepAlives {
  const { silentMs } = options;
  const live = new Set<Entry>();
  let current: Entry | undefined;
  let closed = false;

  /** Ends a stream; its keepalives without another copy waiting fail with `err`. */
  const end = (entry: Entry, err: Error | undefined) => {
    if (entry.ended) return;
    entry.ended = true;
    live.delete(entry);
    if (current === entry) current = undefined;
    clearTimeout(entry.timer);
    for (const renewals of entry.waiting.values())
      for (const r of renewals) {
        // Failed here, and waiting elsewhere only on silent streams: sent again by the store.
        if (err !== undefined && !r.sentOn.some((e) => !e.ended && e.silentAt === undefined))
          r.settle(err);
      }
    entry.waiting.clear();
    void entry.stream.then(
      (s) => {
        s.end();
        s.cancel();
      },
      () => undefined,
    );
  };

  const answered = (entry: Entry, res: ILeaseKeepAliveResponse) => {
    entry.answeredAt = Date.now();
    const id = String(res.ID);
    const renewals = entry.waiting.get(id);
    const r = renewals?.shift();
    if (renewals?.length === 0) entry.waiting.delete(id);
    if (r !== undefined) {
      if (!r.done) {
        // Answered here first: a silent stream it was sent on before that still
        // answers nothing a while later is on a member that stopped.
        for (const before of r.sentOn) {
          if (before === entry) break;
          if (before.suspected || before.silentAt === undefined) continue;
          before.suspected = true;
          const silentAt = before.silentAt;
          setTimeout(() => {
            if (!closed && before.answeredAt < silentAt)
              void before.stream.then(options.onSilent, () => undefined);
          }, REPORT_AFTER_MS).unref();
        }
        r.settle(Number(res.TTL));
      }
    }
    if (entry.silentAt !== undefined && entry.waiting.size === 0) end(entry, undefined);
  };

  const connect = (avoid: Entry | undefined): Entry => {
    const entry: Entry = {
      stream: (avoid?.stream ?? Promise.resolve(undefined)).then(
        (s) => options.open(s),
        () => options.open(undefined),
      ),
      waiting: new Map(),
      answeredAt: Date.now(),
      silentAt: undefined,
      suspected: false,
      horizon: 0,
      timer: undefined,
      ended: false,
    };
    live.add(entry);
    current = entry;
    entry.stream.then(
      (s) => {
        s.on("data", (res: ILeaseKeepAliveResponse) => answered(entry, res));
        // An error or end from the member says it is alive, if not well.
        s.on("error", (err: unknown) => {
          if (!entry.ended) entry.answeredAt = Date.now();
          end(entry, options.toError(err));
        });
        s.on("end", () => {
          if (!entry.ended) entry.answeredAt = Date.now();
          end(entry, new (etcd3().GRPCUnavailableError)("etcd ended the keepalive stream"));
        });
      },
      (err: unknown) => end(entry, options.toError(err)),
    );
    return entry;
  };

  /** Sends `r`'s copy on `entry`, behind whatever waits there. */
  const send = (entry: Entry, id: string, r: Renewal) => {
    // Nothing outstanding until now: the stream's silence counts from here.
    if (entry.waiting.size === 0) entry.answeredAt = Date.now();
    const renewals = entry.waiting.get(id);
    if (renewals === undefined) entry.waiting.set(id, [r]);
    else renewals.push(r);
    r.sentOn.push(entry);
    entry.horizon = Math.max(entry.horizon, r.deadline);
    watchSilence(entry, silentMs, silent);
    entry.stream.then(
      (s) => {
        if (!r.done) s.write({ ID: id });
        else {
          // Given up before it was sent: no answer will come for it.
          const mine = entry.waiting.get(id);
          const at = mine?.indexOf(r) ?? -1;
          if (at >= 0) mine?.splice(at, 1);
          if (mine?.length === 0) entry.waiting.delete(id);
        }
      },
      () => undefined,
    );
  };

  /** The stream went silent: its keepalives go on a new stream, and it closes once nobody waits on it. */
  const silent = (entry: Entry) => {
    clearTimeout(entry.timer);
    entry.silentAt = Date.now();
    if (current === entry) current = undefined;
    const next = connect(entry);
    for (const [id, renewals] of entry.waiting)
      for (const r of renewals) if (!r.done && r.sentOn.length < MAX_COPIES) send(next, id, r);
    entry.timer = setTimeout(
      () =>
        end(
          entry,
          new (etcd3().GRPCUnavailableError)(`etcd keepalive stream silent for ${silentMs} ms`),
        ),
      Math.max(0, entry.horizon - Date.now()),
    );
    entry.timer.unref();
  };

  return {
    keepAlive(id, deadline, signal) {
      return new Promise<number>((resolve, reject) => {
        send(current ?? connect(undefined), id, newRenewal(deadline, signal, resolve, reject));
      });
    },
    close(err) {
      closed = true;
      for (const entry of [...live]) end(entry, err);
    },
  };
}
