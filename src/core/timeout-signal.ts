/**
 * A signal that aborts when any of `signals` does, or `ms` from now with a
 * TimeoutError as AbortSignal.timeout's. On Node 20, AbortSignal.any holds
 * its sources weakly, and AbortSignal.timeout's timer holds its signal
 * weakly too: in `AbortSignal.any([s, AbortSignal.timeout(ms)])` nothing
 * holds the timeout, a garbage collection takes it, and the result never
 * times out (a runner lease renewal bounded so hung under CI's load). Here
 * the timer holds its controller until it fires.
 */
export function timeoutSignal(ms: number, ...signals: (AbortSignal | undefined)[]): AbortSignal {
  const timeout = new AbortController();
  setTimeout(
    () =>
      timeout.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError")),
    ms,
  ).unref();
  const sources = signals.filter((s): s is AbortSignal => s !== undefined);
  return sources.length === 0 ? timeout.signal : AbortSignal.any([timeout.signal, ...sources]);
}
