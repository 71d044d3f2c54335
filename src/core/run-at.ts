// Times further ahead than one Node timer can wait (about 24.8 days): a
// longer setTimeout fires at once, so such a wait is made in steps.

/** The longest single timer Node keeps (about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `run` once, when `atMs` (by `now`) has come: at once (on a timer) if
 * it has, else in steps of at most {@link MAX_TIMER_MS}, each checked against
 * `now` again (a time by a clock that may be set). The timers do not keep the
 * process alive. Returns the cancel.
 */
export function runAt(atMs: number, now: () => number, run: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    const left = atMs - now();
    timer = setTimeout(left <= 0 ? run : arm, Math.min(Math.max(left, 0), MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return () => clearTimeout(timer);
}

/**
 * Calls `run` once, `ms` from now as timers count it, in steps of at most
 * {@link MAX_TIMER_MS}. The timers do not keep the process alive. Returns the cancel.
 */
export function runAfter(ms: number, run: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const step = (left: number) => {
    timer =
      left > MAX_TIMER_MS
        ? setTimeout(() => step(left - MAX_TIMER_MS), MAX_TIMER_MS)
        : setTimeout(run, Math.max(left, 0));
    timer.unref();
  };
  step(ms);
  return () => clearTimeout(timer);
}
