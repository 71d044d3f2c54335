const WATCH_BACKOFF_MS = { first: 100, max: 2000 };
/** How long one attempt waits for etcd to confirm a watch before trying another member (within the reconnect budget). */
const WATCH_CONFIRM_MS = 2500;
// An attempt cut short there does not count against the budget: the next
// one, on another member, gets all of it (an etcd slow everywhere, answering
// in 3.5 s, still confirms then).

/** How long an unconfirmed patient stream is left before it may be asked, after `moves` moves in its outage. */
function patientGraceMs(moves: number): number {
  return moves <= 1 ? 0 : Math.min(60_000, 8000 * 2 ** (moves - 2));
}

/** Durations of the reconnect budget: monotonic, so a wall-clock step neither stretches nor cuts it. */
const monotonic = () => performance.now();

/**
 * The rules of one watch's outage, from a lost or silent stream until etcd
 * confirms a new one: the reconnect budget and backoff, the member to keep
 * off, how long a new stream waits for its confirmation, and when an
 * unconfirmed one may be asked for its progress. The feed owns the stream
 * and its timers; this decides.
 */
export interface WatchOutage {
  /** The stream whose member this outage's attempts keep off, until one is confirmed. */
  readonly avoid: object | undefined;
  /**
   * The wait before the next attempt (keeping off `avoid`'s member, when
   * given), or undefined when the budget is spent.
   */
  retryIn(avoid?: object): number | undefined;
  /** The stream failed: a real disconnect, which the budget bounds. */
  broken(): void;
  /** The silent stream `from` is left for another member at once. */
  moved(from: object): void;
  /** A new stream is open (its confirmation is awaited). */
  opened(): void;
  /** etcd confirmed the watch: the outage is over. */
  confirmed(): void;
  /**
   * How long the new stream waits for its confirmation before the next
   * attempt, and whether that wait is the short one; undefined: it waits as
   * long as it takes (a patient outage's attempt after its cut one).
   */
  confirmation(): { readonly waitMs: number; readonly cut: boolean } | undefined;
  /** The wait for a confirmation ended with none. */
  unconfirmed(cut: boolean): void;
  /** Whether an unconfirmed stream may be asked for its progress now. */
  mayAskUnconfirmed(): boolean;
}

/** Creates the {@link WatchOutage} of a watch whose first stream is being opened. */
export function createWatchOutage(options: {
  /** Whether there are other members to move the watch to. */
  readonly elsewhere: boolean;
  /** How long the watch may stay disconnected before it ends. */
  readonly budgetMs: number;
  /** Milliseconds on a monotonic clock (default performance.now; tests pass their own). */
  readonly now?: () => number;
}): WatchOutage {
  const { elsewhere, budgetMs } = options;
  const now = options.now ?? monotonic;
  const s = {
    /** An attempt of this outage was cut short for a late confirmation (the next gets the whole budget). */
    cut: false,
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
    outageSince: now() as number | undefined,
    backoffMs: WATCH_BACKOFF_MS.first,
  };
  return {
    get avoid() {
      return s.avoid;
    },
    retryIn(avoid) {
      s.outageSince ??= now();
      const left = s.outageSince + budgetMs - now();
      if (left <= 0) return undefined;
      const wait = Math.min(s.backoffMs, left);
      s.backoffMs = Math.min(s.backoffMs * 2, WATCH_BACKOFF_MS.max);
      if (avoid !== undefined) s.avoid = avoid;
      return wait;
    },
    broken() {
      s.patient = false;
    },
    moved(from) {
      s.outageSince ??= now();
      s.avoid = from;
      s.patient = true;
      s.moves++;
    },
    opened() {
      s.openedAt = now();
    },
    confirmed() {
      s.moves = 0;
      s.cut = false;
      s.avoid = undefined;
      s.patient = false;
      s.outageSince = undefined;
      s.backoffMs = WATCH_BACKOFF_MS.first;
    },
    confirmation() {
      // Not the whole budget on one member, once an outage: a stopped one never confirms.
      const left = (s.outageSince ?? now()) + budgetMs - now();
      const cut = elsewhere && !s.cut && left > WATCH_CONFIRM_MS;
      if (!cut && s.patient) {
        // Waits for the confirmation or an error; an error starts a new budget.
        s.outageSince = undefined;
        return undefined;
      }
      return { waitMs: cut ? WATCH_CONFIRM_MS : Math.max(left, 1), cut };
    },
    unconfirmed(cut) {
      if (!cut) return;
      s.cut = true;
      s.outageSince = now();
    },
    mayAskUnconfirmed() {
      // A patient stream is watched before it is confirmed too: cut short on a slow member,
      // an outage's next attempt may be on the silent member it left, and would wait
      // there, never confirmed, until that member is back. Each one after the first in
      // an outage is given longer (8, 16, 32, then 60 s) before it is asked: with every
      // member answering late, a stream moved every 9 s would never be confirmed.
      return s.patient && now() - s.openedAt >= patientGraceMs(s.moves);
    },
  };
}
