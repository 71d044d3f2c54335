import { RpcError, runAt } from "../core/index.js";

/** Subscribes a listener to changes; returns the unsubscribe. */
export type Subscribe = (listener: () => void) => () => void;

const ENDED = Symbol("ended");

/**
 * Passes a response stream through until `check` answers an error, then
 * ends the stream with it. `check` runs at the start and on every change
 * `subscribe` tells of: a stream is authorized when it opens, and this keeps
 * it so while it runs (a revoked certificate or key, an expired token, an
 * ended panel session, bindings that no longer give the caller what they
 * gave).
 */
export async function* endWhen(
  source: AsyncIterable<unknown>,
  check: () => RpcError | undefined,
  subscribe: Subscribe,
  /**
   * Also checked before each message: for a check that turns on the time (an expiry),
   * whose timer may run after a message made past it (a loaded event loop).
   */
  everyMessage = false,
): AsyncIterable<unknown> {
  const it = source[Symbol.asyncIterator]();
  let ended: RpcError | undefined;
  // One promise per message, dropped once it settles: a race against one
  // long-lived promise would add a reaction to it per message, keeping every
  // response of the stream in memory until the stream ends.
  let wake: (() => void) | undefined;
  const unsubscribe = subscribe(() => {
    if (ended !== undefined) return;
    ended = check();
    if (ended !== undefined) wake?.();
  });
  // A change that landed before the subscription would otherwise go unseen.
  ended = check();
  try {
    for (;;) {
      const r =
        ended !== undefined
          ? ENDED
          : await new Promise<IteratorResult<unknown> | typeof ENDED>((resolve, reject) => {
              wake = () => resolve(ENDED);
              it.next().then(resolve, reject);
            });
      wake = undefined;
      if (r !== ENDED && !r.done && everyMessage) ended ??= check();
      if (r === ENDED || ended !== undefined) throw ended ?? new RpcError("UNAUTHENTICATED");
      if (r.done) return;
      yield r.value;
    }
  } finally {
    unsubscribe();
    // Not awaited: a pending next() would hold return() until it resolves.
    void it.return?.();
  }
}

/** Every one of `subscribes`, as one. */
export function allOf(...subscribes: (Subscribe | undefined)[]): Subscribe {
  return (listener) => {
    const stops = subscribes.map((s) => s?.(listener));
    return () => {
      for (const stop of stops) stop?.();
    };
  };
}

/** Tells its listener once `atMs` (by `now`) has come (at once if it has); never when undefined. */
export function at(atMs: number | undefined, now: () => number): Subscribe {
  return (listener) => {
    if (atMs === undefined) return () => {};
    if (atMs - now() <= 0) {
      listener();
      return () => {};
    }
    return runAt(atMs, now, listener);
  };
}
