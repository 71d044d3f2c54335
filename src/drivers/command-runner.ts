/**
 * Runs an external program the way every real driver must: an argument
 * array (never a shell), a timeout that kills the process, a bound on the
 * output kept, an AbortSignal, and line callbacks for streamed progress.
 *
 * The child gets its own process group, so killing it also ends the helpers
 * it started (virsh's ssh tunnel to a `qemu+ssh://` destination). A kill sends
 * `killSignal` first (virsh turns SIGINT into an orderly job abort) and
 * SIGKILL after `killGraceMs`.
 */
import { spawn } from "node:child_process";
import { StringDecoder } from "node:string_decoder";

/** What a finished process left behind. */
export interface CommandResult {
  /** The exit code, or null when a signal ended the process. */
  readonly exitCode: number | null;
  /** The signal that ended the process, if one did. */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of one {@link CommandRunner} call. */
export interface RunOptions {
  /** The process is killed after this long and the call rejects with `timeout`. */
  readonly timeoutMs: number;
  /** Aborting kills the process and rejects with `aborted`; an aborted signal runs nothing. */
  readonly signal?: AbortSignal;
  /** Bound on each of stdout and stderr in bytes (default 1 MiB); past it the process is killed. */
  readonly maxOutputBytes?: number;
  /** Called with each line of stdout as it arrives (lines end at `\n`, `\r\n` or `\r`). */
  readonly onStdoutLine?: (line: string) => void;
  /** Called with each line of stderr as it arrives (virsh's progress is `\r`-separated). */
  readonly onStderrLine?: (line: string) => void;
  /** Variables added to the inherited environment (for example `LC_ALL=C`). */
  readonly env?: Readonly<Record<string, string>>;
  /** The first signal of a kill (default SIGTERM). */
  readonly killSignal?: NodeJS.Signals;
  /** How long after `killSignal` SIGKILL follows (default 2000 ms). */
  readonly killGraceMs?: number;
}

/**
 * Runs `program` with `args` and resolves with its result, whatever its exit
 * code; rejects with a {@link CommandError} only when it could not run it to
 * the end (not found, timed out, aborted, too much output).
 */
export type CommandRunner = (
  program: string,
  args: readonly string[],
  options: RunOptions,
) => Promise<CommandResult>;

/** Why a command did not run to its end. */
export type CommandErrorKind =
  | "not-found"
  | "spawn-failed"
  | "timeout"
  | "aborted"
  | "output-limit";

/** A command that could not run to its end. The message names the program, never its arguments. */
export class CommandError extends Error {
  override readonly name = "CommandError";
  readonly kind: CommandErrorKind;
  /** What the process left when it was killed (or exited on its own while being killed). */
  readonly result: CommandResult | undefined;

  constructor(
    kind: CommandErrorKind,
    program: string,
    options: { cause?: unknown; result?: CommandResult } = {},
  ) {
    super(
      `${program}: ${kind}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.kind = kind;
    this.result = options.result;
  }
}

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
const DEFAULT_KILL_GRACE_MS = 2000;

/** Splits a stream into lines at `\n`, `\r\n` or `\r`, keeping the unfinished tail. */
export class LineSplitter {
  private tail = "";
  constructor(private readonly onLine: (line: string) => void) {}

  /** Feeds decoded text; calls back for each line it completes. */
  push(text: string): void {
    const parts = (this.tail + text).split(/\r\n|\r|\n/);
    // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
    this.tail = parts.pop() ?? "";
    if (text.endsWith("\r") && parts.length > 0) {
      this.tail = `${parts.pop() ?? ""}\r`;
    }
    for (const line of parts) this.emit(line);
  }

  /** Ends the stream: the unfinished tail, if any, is the last line. */
  end(): void {
    const rest = this.tail.replace(/\r$/, "");
    this.tail = "";
    if (rest !== "") this.emit(rest);
  }

  private emit(line: string): void {
    try {
      this.onLine(line);
    } catch {
      // A failing listener must not break the command it listens to.
    }
  }
}

/** The real {@link CommandRunner}: `child_process.spawn` without a shell. */
export const runCommand: CommandRunner = (program, args, options) => {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(new CommandError("aborted", program));
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const killGraceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;

  return new Promise<CommandResult>((resolve, reject) => {
    const child = spawn(program, [...args], {
      shell: false,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env === undefined ? process.env : { ...process.env, ...options.env },
    });
    const out = collector(maxOutput, options.onStdoutLine);
    const err = collector(maxOutput, options.onStderrLine);
    let failure: CommandErrorKind | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let spawnError: unknown;

    const killGroup = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // Already gone.
      }
    };
    const stop = (kind: CommandErrorKind) => {
      if (failure !== undefined) return;
      failure = kind;
      killGroup(options.killSignal ?? "SIGTERM");
      killTimer = setTimeout(() => killGroup("SIGKILL"), killGraceMs);
    };
    const onAbort = () => stop("aborted");
    const timer = setTimeout(() => stop("timeout"), options.timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (chunk: Buffer) => {
      if (!out.add(chunk)) stop("output-limit");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (!err.add(chunk)) stop("output-limit");
    });
    child.on("error", (e) => {
      spawnError = e;
    });
    child.on("close", (code, sig) => {
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      signal?.removeEventListener("abort", onAbort);
      const result: CommandResult = {
        exitCode: code,
        signal: sig,
        stdout: out.finish(),
        stderr: err.finish(),
      };
      if (spawnError !== undefined) {
        const notFound = (spawnError as NodeJS.ErrnoException).code === "ENOENT";
        reject(
          new CommandError(notFound ? "not-found" : "spawn-failed", program, {
            cause: spawnError,
          }),
        );
      } else if (failure !== undefined) {
        reject(new CommandError(failure, program, { result }));
      } else {
        resolve(result);
      }
    });
  });
};

/** Keeps up to `max` bytes of one stream and feeds its lines to `onLine`. */
function collector(max: number, onLine: ((line: string) => void) | undefined) {
  const decoder = new StringDecoder("utf8");
  const lines = onLine === undefined ? undefined : new LineSplitter(onLine);
  let text = "";
  let bytes = 0;
  return {
    /** False once the bound is passed (the excess is dropped). */
    add(chunk: Buffer): boolean {
      if (bytes + chunk.length > max) {
        bytes = max + 1;
        return false;
      }
      bytes += chunk.length;
      const s = decoder.write(chunk);
      text += s;
      lines?.push(s);
      return true;
    },
    finish(): string {
      const s = decoder.end();
      text += s;
      if (s !== "") lines?.push(s);
      lines?.end();
      return text;
    },
  };
}
