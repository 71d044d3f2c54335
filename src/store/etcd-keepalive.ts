import {
  GRPCDeadlineExceededError,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
} from "etcd3";
import { abortError } from "../core/index.js";

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** A stream that has answered nothing for this long, with keepalives waiting, is given up. */
const STUCK_MS = 10_000;

/** One keepalive sent and not yet answered; `done` once its caller has its answer or gave up. */
interface Slot {
  done: boolean;
  settle(ttl: number | Error): void;
}

/** Lease keepalives multiplexed on one etcd stream (see {@link createKeepAlives}). */
export interface KeepAlives {
  /** Renews lease `id`; resolves with its remaining TTL in seconds (0: no such lease). */
  keepAlive(id: string, deadline: number, signal: AbortSignal | undefined): Promise<number>;
  /** Ends the stream; keepalives still waiting fail with `err`. */
  close(err: Error): void;
}

/**
 * Lease keepalives on one long-lived LeaseKeepAlive stream (a store spreads
 * its leases over a few of these), instead of a stream opened and closed per
 * keepalive: with thousands of
 * nodes heartbeating, opening a gRPC stream per renewal was a large share of
 * the daemon's CPU per heartbeat. etcd answers the requests of one stream one
 * by one, in order, each with its lease's id and remaining TTL, so answers
 * are matched to requests per lease, oldest first. A caller that gives up
 * (deadline, abort) keeps its place in that order, so a late answer is never
 * taken for a later request's. A deadline missed, or the stream failing or
 * ending, fails every keepalive waiting on it (the store retries them like
 * reads: renewing twice is harmless) and the next one opens a new stream.
 */
export function createKeepAlives(
  open: () => Promise<KeepAliveStream>,
  toError: (err: unknown) => Error,
): KeepAlives {
  let current:
    | { stream: Promise<KeepAliveStream>; waiting: Map<string, Slot[]>; answeredAt: number }
    | undefined;

  const fail = (of: NonNullable<typeof current>, err: Error) => {
    if (current === of) current = undefined;
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

  const connect = () => {
    const waiting = new Map<string, Slot[]>();
    const stream = open();
    const entry = { stream, waiting, answeredAt: Date.now() };
    current = entry;
    stream.then(
      (s) => {
        s.on("data", (res: ILeaseKeepAliveResponse) => {
          entry.answeredAt = Date.now();
          const id = String(res.ID);
          const slots = waiting.get(id);
          const slot = slots?.shift();
          if (slots?.length === 0) waiting.delete(id);
          slot?.settle(Number(res.TTL));
        });
        s.on("error", (err: unknown) => fail(entry, toError(err)));
        s.on("end", () =>
          fail(entry, new Error("etcd ended the keepalive stream without an answer")),
        );
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
        // Past its deadline a keepalive fails alone, keeping its place for its late
        // answer. Only a stream that has answered nothing for STUCK_MS is
        // stuck: then every keepalive on it starts over on a new one. (Failing
        // them all at the first late answer turned a loaded host's queue into
        // a storm of retries.)
        const timer = setTimeout(
          () => {
            const err = new GRPCDeadlineExceededError("etcd keepalive: deadline exceeded");
            if (Date.now() - entry.answeredAt >= STUCK_MS) fail(entry, err);
            else slot.settle(err);
          },
          Math.max(0, deadline - Date.now()),
        );
        signal?.addEventListener("abort", onAbort, { once: true });
        // Nothing outstanding until now: the stream's silence counts from here.
        if (entry.waiting.size === 0) entry.answeredAt = Date.now();
        const slots = entry.waiting.get(id);
        if (slots === undefined) entry.waiting.set(id, [slot]);
        else slots.push(slot);
        entry.stream.then(
          (s) => {
            if (!slot.done) s.write({ ID: id });
            else {
              // Gave up before it was sent: no answer will come for it.
              const mine = entry.waiting.get(id);
              const at = mine?.indexOf(slot) ?? -1;
              if (at >= 0) mine?.splice(at, 1);
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
