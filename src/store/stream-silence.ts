/** Options of {@link createStreamSilence}. */
export interface StreamSilenceOptions {
  /** How long the stream may say nothing before it is asked (`ask`). */
  readonly quietMs: number;
  /** How long after asking, still without a word, the stream is taken as silent. */
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
 * once, and if nothing was heard `silentMs` later, `silent` (once per
 * question). The verdict is taken after the I/O already received has been
 * read (setImmediate): a process too busy to read an answer in time does not
 * take its own delay for the stream's.
 */
export function createStreamSilence(options: StreamSilenceOptions): StreamSilence {
  const now = options.now ?? Date.now;
  let heardAt = now();
  let askedAt: number | undefined;
  return {
    heard() {
      heardAt = now();
      askedAt = undefined;
    },
    check() {
      const at = now();
      if (askedAt === undefined) {
        if (at - heardAt < options.quietMs) return;
        askedAt = at;
        options.ask();
        return;
      }
      if (at - askedAt < options.silentMs) return;
      const asked = askedAt;
      setImmediate(() => {
        if (askedAt !== asked) return;
        askedAt = undefined;
        heardAt = now();
        options.silent();
      });
    },
  };
}
