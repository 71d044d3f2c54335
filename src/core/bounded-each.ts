// Work over many items, a few at a time: one slow item holds up only its own
// slot, never the items behind it.

/**
 * Runs `work` on each of `items`, in their order, at most `limit` at once.
 * Nothing more is started once `signal` aborts, once `work` answers false
 * (told to stop: leadership lost, say) or once one throws; those already
 * under way are waited for, and the first error is then rethrown. Resolves
 * with whether every item was run.
 */
export async function boundedEach<T>(
  items: Iterable<T>,
  limit: number,
  signal: AbortSignal,
  work: (item: T) => Promise<boolean | undefined>,
): Promise<boolean> {
  const next = items[Symbol.iterator]();
  let stopped = false;
  let exhausted = false;
  let failure: { err: unknown } | undefined;
  async function slot() {
    while (!stopped && !signal.aborted) {
      const item = next.next();
      if (item.done === true) {
        exhausted = true;
        return;
      }
      try {
        if ((await work(item.value)) === false) stopped = true;
      } catch (err) {
        failure ??= { err };
        stopped = true;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.floor(limit)) }, slot));
  if (failure !== undefined) throw failure.err;
  return exhausted && !stopped;
}
