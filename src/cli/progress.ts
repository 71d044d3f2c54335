import type { EventEmitter } from "node:events";
import { formatBytes, terminalSafe } from "./output.js";

/** Where an operation stands. */
export interface ProgressUpdate {
  /** What is happening now, like "copying memory". */
  readonly phase: string;
  /** 0 to 100. */
  readonly percent: number;
  /** Bytes done and in all, when known: the rate and ETA are then in bytes. */
  readonly doneBytes?: number | bigint;
  readonly totalBytes?: number | bigint;
  /**
   * Shown after the rate and ETA, like "downtime ~120 ms". Not part of the
   * phase: a detail that changes does not restart the rate.
   */
  readonly detail?: string;
}

/** A stream to draw on: process.stderr, or a fake in tests. */
export interface ProgressStream {
  write(text: string): unknown;
  /** Terminal width; 80 when unknown. */
  readonly columns?: number;
}

/** Options of {@link createProgressRenderer}. */
export interface ProgressOptions {
  readonly stream: ProgressStream;
  /** A terminal gets a live bar; anything else plain lines. */
  readonly tty: boolean;
  /** Prefix of every line, like "migration m-42". */
  readonly label?: string;
  /** Milliseconds clock (default Date.now); tests pass a fake. */
  readonly now?: () => number;
  /** Least time between two redraws of the bar (default 100 ms). */
  readonly redrawMs?: number;
}

/** Draws progress: a live bar on a terminal, plain lines elsewhere. */
export interface ProgressRenderer {
  update(update: ProgressUpdate): void;
  /** Removes the live bar (before asking a question); the next update draws it again. */
  clear(): void;
  /** Ends: removes the bar and prints `line` (a newline is added). */
  finish(line: string): void;
}

const BAR_WIDTH = 24;

/**
 * Renders progress. On a terminal: one line redrawn in place with phase, a
 * bar, percent, rate and ETA. Otherwise (a pipe, a CI log): a plain line
 * whenever the phase changes or the percent crosses a multiple of 10.
 */
export function createProgressRenderer(options: ProgressOptions): ProgressRenderer {
  const now = options.now ?? Date.now;
  const redrawMs = options.redrawMs ?? 100;
  const label = options.label === undefined ? "" : `${options.label}: `;
  let phase: string | undefined;
  let phaseStart = { at: 0, percent: 0, bytes: 0 };
  let lastDecile = -1;
  let lastDraw = Number.NEGATIVE_INFINITY;
  let drawn = false;
  let pending: ProgressUpdate | undefined;

  const speed = (u: ProgressUpdate) => {
    const elapsed = (now() - phaseStart.at) / 1000;
    const pct = clamp(u.percent);
    if (elapsed < 1) return { rate: "", eta: "" };
    if (u.doneBytes !== undefined) {
      const perSec = (Number(u.doneBytes) - phaseStart.bytes) / elapsed;
      const left =
        u.totalBytes === undefined ? undefined : Number(u.totalBytes) - Number(u.doneBytes);
      return {
        rate: `${formatBytes(Math.max(0, Math.round(perSec)))}/s`,
        eta: left === undefined || perSec <= 0 ? "" : formatEta((left / perSec) * 1000),
      };
    }
    const perSec = (pct - phaseStart.percent) / elapsed;
    return {
      rate: `${perSec.toFixed(1)}%/s`,
      eta: perSec <= 0 ? "" : formatEta(((100 - pct) / perSec) * 1000),
    };
  };

  const describe = (u: ProgressUpdate) => {
    const { rate, eta } = speed(u);
    return { pct: `${Math.floor(clamp(u.percent))}%`, rate, eta };
  };

  const drawBar = (u: ProgressUpdate) => {
    const { pct, rate, eta } = describe(u);
    const filled = Math.round((clamp(u.percent) / 100) * BAR_WIDTH);
    const bar = `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}]`;
    const parts = [
      `${label}${u.phase}`,
      bar,
      pct.padStart(4),
      rate,
      eta && `ETA ${eta}`,
      u.detail ?? "",
    ];
    const text = parts.filter((p) => p !== "").join("  ");
    const width = Math.max(20, (options.stream.columns || 80) - 1);
    const shown = terminalSafe(text);
    options.stream.write(`\r\x1b[2K${shown.length > width ? shown.slice(0, width) : shown}`);
    drawn = true;
    lastDraw = now();
    pending = undefined;
  };

  return {
    update(u) {
      if (u.phase !== phase) {
        phase = u.phase;
        phaseStart = { at: now(), percent: clamp(u.percent), bytes: Number(u.doneBytes ?? 0) };
        lastDecile = -1;
        if (options.tty) {
          drawBar(u);
          return;
        }
      }
      if (options.tty) {
        if (now() - lastDraw >= redrawMs) drawBar(u);
        else pending = u;
        return;
      }
      const decile = Math.floor(clamp(u.percent) / 10);
      if (decile === lastDecile) return;
      lastDecile = decile;
      const { pct, rate, eta } = describe(u);
      const extra = [rate, eta && `ETA ${eta}`, u.detail ?? ""].filter((p) => p !== "").join(", ");
      options.stream.write(
        `${terminalSafe(`${label}${u.phase} ${pct}${extra === "" ? "" : ` (${extra})`}`)}\n`,
      );
    },
    clear() {
      if (options.tty && drawn) options.stream.write("\r\x1b[2K");
      drawn = false;
    },
    finish(line) {
      if (options.tty && pending !== undefined) drawBar(pending);
      if (options.tty && drawn) options.stream.write("\r\x1b[2K");
      drawn = false;
      options.stream.write(`${terminalSafe(`${label}${line}`)}\n`);
    },
  };
}

function clamp(p: number): number {
  return Number.isFinite(p) ? Math.min(100, Math.max(0, p)) : 0;
}

/** A remaining time as people say it: 45s, 3m20s, 2h5m. */
export function formatEta(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(s / 3600);
  return h >= 100 ? `${h}h` : `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Options of {@link watchInterrupts}. */
export interface InterruptOptions {
  /** Where SIGINT arrives: the process, or a fake in tests. */
  readonly signals: EventEmitter;
  /** Whether stdin and stderr are a terminal a person can answer on. */
  readonly tty: boolean;
  /** The keyboard, for the answer (raw mode while asking, when it has setRawMode). */
  readonly input?: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => unknown };
  /** Where questions and notes go (stderr). */
  readonly write: (text: string) => void;
  /** Stops watching here (aborts the local stream); the operation goes on. */
  readonly stopWatching: () => void;
  /** Cancels the operation itself; absent when there is nothing to cancel. */
  readonly cancel?: () => Promise<void> | void;
  /** The command that resumes watching, like "hvctl migration watch m-42". */
  readonly resumeHint?: string;
  /** Called before a question is printed: clear a live progress bar and hold it. */
  readonly beforePrompt?: () => void;
  /** Called once the question is answered (or dropped): the bar may draw again. */
  readonly afterPrompt?: () => void;
}

/** What Ctrl-C led to so far. */
export type InterruptOutcome = "watching" | "stopped" | "cancelled";

/** A handle on the Ctrl-C handling of one watched operation. */
export interface InterruptWatch {
  readonly outcome: () => InterruptOutcome;
  /** Stops listening for Ctrl-C; call when the operation ends. */
  dispose(): void;
}

/**
 * Handles Ctrl-C while an operation is watched. On a terminal, when there is
 * something to cancel, it asks "cancel the operation or just stop watching?
 * [c/w]": c cancels (and keeps watching until the operation ends), w stops
 * watching, anything else goes on watching. Elsewhere (or with nothing to
 * cancel) the first Ctrl-C stops watching and prints how to resume; from then
 * on Ctrl-C has its default effect, so a second one ends hvctl at once.
 */
export function watchInterrupts(options: InterruptOptions): InterruptWatch {
  let outcome: InterruptOutcome = "watching";
  let asking = false;
  const resume =
    options.resumeHint === undefined ? "" : `; to watch it again: ${options.resumeHint}`;
  const stop = () => {
    outcome = "stopped";
    dispose();
    options.beforePrompt?.();
    options.write(
      `stopped watching${options.cancel === undefined ? "" : "; the operation goes on"}${resume}\n`,
    );
    options.stopWatching();
  };
  const cancel = async () => {
    options.write("cancelling the operation...\n");
    try {
      await options.cancel?.();
      outcome = "cancelled";
    } catch (err) {
      options.write(`could not cancel: ${terminalSafe((err as Error).message)}; still watching\n`);
    }
  };
  /** Stops waiting for an answer: the keyboard back to normal, no listener left to keep hvctl alive. */
  let endQuestion = () => {};
  const ask = () => {
    const input = options.input;
    if (input === undefined) return stop();
    asking = true;
    options.beforePrompt?.();
    options.write("\ncancel the operation or just stop watching? [c/w] ");
    const onKey = (chunk: Buffer | string) => {
      endQuestion();
      const key = String(chunk).trim().toLowerCase().slice(0, 1);
      options.write(`${key === "\x03" ? "^C" : key}\n`);
      if (key === "c") void cancel();
      else if (key === "w" || key === "\x03") stop();
      else options.write("still watching\n");
    };
    endQuestion = () => {
      input.removeListener("data", onKey);
      input.setRawMode?.(false);
      input.pause();
      asking = false;
      endQuestion = () => {};
      options.afterPrompt?.();
    };
    input.setRawMode?.(true);
    input.resume();
    input.once("data", onKey);
  };
  const onSigint = () => {
    if (asking) return;
    if (options.tty && options.cancel !== undefined && outcome === "watching") ask();
    else stop();
  };
  const dispose = () => {
    options.signals.removeListener("SIGINT", onSigint);
    if (asking) {
      endQuestion();
      options.write("\n");
    }
  };
  options.signals.on("SIGINT", onSigint);
  return { outcome: () => outcome, dispose };
}

/** Options of {@link watchProgress}. */
export interface WatchOptions<T> {
  /** Prefix of the progress lines, like "migration m-42". */
  readonly label?: string;
  /** Opens the stream of states; it ends when the operation does. Abort the signal to stop watching. */
  readonly open: (signal: AbortSignal) => AsyncIterable<T>;
  /**
   * Where one state stands. `say` prints a line of its own on stderr (the
   * bar cleared first, drawn again by the next state); once the watch has
   * ended, it prints nothing.
   */
  readonly progress: (state: T, say: (line: string) => void) => ProgressUpdate;
  /** Cancels the operation on the server; absent when it cannot be cancelled. */
  readonly cancel?: () => Promise<void>;
  /** The command that watches again, printed when the user stops watching. */
  readonly resumeHint?: string;
  /** The last line, from the last state seen. */
  readonly summary: (last: T | undefined) => string;
}

/** The terminal and signals a watch uses; a CliContext's `io` fits. */
export interface WatchIo {
  readonly err: (text: string) => void;
  readonly tty?: { readonly stderr?: boolean; readonly stdin?: boolean };
  readonly stdin?: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => unknown };
  readonly signals?: EventEmitter;
  /** Terminal width; 0 or absent means 80. */
  readonly columns?: number;
}

/**
 * Watches a long operation (migration run, drain, replication run): draws
 * its progress on stderr (a bar on a terminal, lines elsewhere) and handles
 * Ctrl-C with {@link watchInterrupts}. Resolves with the last state and what
 * Ctrl-C led to; stream errors other than the stop are thrown.
 */
export async function watchProgress<T>(
  io: WatchIo,
  options: WatchOptions<T>,
): Promise<{ last: T | undefined; outcome: InterruptOutcome }> {
  const renderer = createProgressRenderer({
    stream: { write: io.err, columns: io.columns || 80 },
    tty: io.tty?.stderr === true,
    ...(options.label === undefined ? {} : { label: options.label }),
  });
  const abort = new AbortController();
  // While the question is on screen the bar waits, so it does not draw over it.
  let held = false;
  const interrupts = watchInterrupts({
    signals: io.signals ?? process,
    tty: io.tty?.stderr === true && io.tty?.stdin === true,
    ...(io.stdin === undefined ? {} : { input: io.stdin }),
    write: io.err,
    stopWatching: () => abort.abort(),
    ...(options.cancel === undefined ? {} : { cancel: options.cancel }),
    ...(options.resumeHint === undefined ? {} : { resumeHint: options.resumeHint }),
    beforePrompt: () => {
      held = true;
      renderer.clear();
    },
    afterPrompt: () => {
      held = false;
    },
  });
  let last: T | undefined;
  let ended = false;
  const say = (line: string) => {
    if (ended || held) return;
    renderer.clear();
    io.err(line);
  };
  try {
    for await (const state of options.open(abort.signal)) {
      last = state;
      const update = options.progress(state, say);
      if (!held) renderer.update(update);
    }
  } catch (err) {
    if (!abort.signal.aborted) {
      renderer.clear();
      throw err;
    }
  } finally {
    ended = true;
    interrupts.dispose();
  }
  if (!abort.signal.aborted) renderer.finish(options.summary(last));
  return { last, outcome: interrupts.outcome() };
}
