/** Options of {@link createStreamSilence}. */
export interface StreamSilenceOptions {
  /** How long the stream may say nothing before it is asked (`ask`). */
  readonly quietMs: number;
  /**
   * How long, still without a word, the stream is taken as silent: counted
   * from the first check after asking (a question written in a turn that
   * then blocked goes out late; its wait is not held against the stream).
   */
  readonly silentMs: number;
  /** Asks the stream for an answer (for a watch: a progress request). */
  readonly ask: () => void;
  /** The stream did not answer: its member holds it open and says nothing. */
  readonly silent: () => void;
  readonly now?: () => number;
}

/**
 * Silence of one long-lived stream that answers when asked. A stopped
 * process, or a partition that drops packets, keeps the connection open and
 * sends nothing, so no error ever comes; only a question that goes
 * unanswered shows it.
 */
export interface StreamSilence {
  /** The stream said something, or was opened anew: not silent. */
  heard(): void;
  /** Looks at the clock; called by a ticker about every second. */
  check(): void;
}

/**
 * A {@link StreamSilence}: after `quietMs` without a word `ask` is called
 * once, and if nothing was heard for `silentMs` from the next check on,
 * `silent` (once per question). The verdict is taken after the I/O already
 * received has been read (setImmediate): an answer that arrived while the
 * process was blocked counts.
 */
export function createStreamSilence(options: StreamSilenceOptions): StreamSilence {
  // Monotonic: a wall-clock step back must not stop the questions.
  const now = options.now ?? (() => performance.now());
  let heardAt = now();
  let asked = false;
  /** The first check after asking; the wait for an answer counts from here. */
  let waitingSince: number | undefined;
  return {
    heard() {
      heardAt = now();
      asked = false;
      waitingSince = undefined;
    },
    check() {
      const at = now();
      if (!asked) {
        if (at - heardAt < options.quietMs) return;
        asked = true;
        options.ask();
        return;
      }
      if (waitingSince === undefined) {
        waitingSince = at;
        return;
      }
      if (at - waitingSince < options.silentMs) return;
      const since = waitingSince;
      setImmediate(() => {
        if (waitingSince !== since) return;
        asked = false;
        waitingSince = undefined;
        heardAt = now();
        options.silent();
      });
    },
  };
}
