/**
 * Runs an external program the way every real driver must: an argument
 * array (never a shell), a timeout that kills the process, an AbortSignal.
 * One place spawns processes for every driver: {@link startCommand} hands out
 * the three streams (the storage drivers pipe `zfs send` into `zfs receive`);
 * {@link runCommand} (virsh) runs to the end with a bound on the output kept
 * and line callbacks for streamed progress.
 *
 * The child gets its own process group, so killing it also ends the helpers
 * it started (virsh's ssh tunnel to a `qemu+ssh://` destination). A kill sends
 * `killSignal` first (virsh turns SIGINT into an orderly job abort) and
 * SIGKILL after `killGraceMs`.
 */
import { spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { StringDecoder } from "node:string_decoder";

/** Options of {@link startCommand}. */
export interface StartOptions {
  /** The process is killed after this long (`timedOut` in its exit). */
  readonly timeoutMs: number;
  /** Aborting kills the process (`aborted` in its exit). */
  readonly signal?: AbortSignal;
  /** Variables added to the inherited environment (for example `LC_ALL=C`). */
  readonly env?: Readonly<Record<string, string>>;
  /** The first signal of a kill (default SIGTERM). */
  readonly killSignal?: NodeJS.Signals;
  /** How long after `killSignal` SIGKILL follows (default 2000 ms). */
  readonly killGraceMs?: number;
}

/** How a command ended. */
export interface CommandExit {
  /** Exit status; null when killed by a signal or never started. */
  readonly code: number | null;
  readonly signal: string | null;
  /** Killed because its time ran out (and not for another reason first). */
  readonly timedOut: boolean;
  /** Killed because its signal aborted (and not for another reason first). */
  readonly aborted: boolean;
  /** Set when the program could not be started (not installed, not executable). */
  readonly spawnError?: Error;
}

/** A started command with its three streams. */
export interface RunningCommand {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Resolves (never rejects) once the command has ended and its streams have closed. */
  readonly exit: Promise<CommandExit>;
}

/** A command started on this host. */
export interface LocalCommand extends RunningCommand {
  /** Kills it (and its process group): `killSignal`, then SIGKILL after the grace. */
  kill(): void;
}

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

/**
 * Starts `program` with `args` on this host (`spawn`, no shell) in its own
 * process group. An already aborted signal still starts it, and kills it at once.
 */
export function startCommand(
  program: string,
  args: readonly string[],
  options: StartOptions,
): LocalCommand {
  const { signal } = options;
  const killGraceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const child = spawn(program, [...args], {
    shell: false,
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
    env: options.env === undefined ? process.env : { ...process.env, ...options.env },
  });
  let killedFor: "timeout" | "aborted" | "killed" | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let spawnError: Error | undefined;
  const killGroup = (sig: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // Already gone.
    }
  };
  const stop = (why: "timeout" | "aborted" | "killed") => {
    if (killedFor !== undefined) return;
    killedFor = why;
    killGroup(options.killSignal ?? "SIGTERM");
    killTimer = setTimeout(() => killGroup("SIGKILL"), killGraceMs);
    killTimer.unref();
  };
  const onAbort = () => stop("aborted");
  const timer = setTimeout(() => stop("timeout"), options.timeoutMs);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  // A reader that stops early (the other side of a pipe died) must not crash the daemon.
  child.stdin.on("error", () => {});
  const exit = new Promise<CommandExit>((resolve) => {
    child.once("error", (e) => {
      spawnError = e;
    });
    child.once("close", (code, sig) => {
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      signal?.removeEventListener("abort", onAbort);
      resolve({
        code,
        signal: sig,
        timedOut: killedFor === "timeout",
        aborted: killedFor === "aborted",
        spawnError,
      });
    });
  });
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    exit,
    kill: () => stop("killed"),
  };
}

/** The real {@link CommandRunner}: {@link startCommand} with stdin closed, run to its end. */
export const runCommand: CommandRunner = async (program, args, options) => {
  if (options.signal?.aborted) throw new CommandError("aborted", program);
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const cmd = startCommand(program, args, options);
  cmd.stdin.end();
  const out = collector(maxOutput, options.onStdoutLine);
  const err = collector(maxOutput, options.onStderrLine);
  let overflowed = false;
  const overflow = () => {
    if (overflowed) return;
    overflowed = true;
    cmd.kill();
  };
  cmd.stdout.on("data", (chunk: Buffer) => {
    if (!out.add(chunk)) overflow();
  });
  cmd.stderr.on("data", (chunk: Buffer) => {
    if (!err.add(chunk)) overflow();
  });
  const exit = await cmd.exit;
  const result: CommandResult = {
    exitCode: exit.code,
    signal: exit.signal as NodeJS.Signals | null,
    stdout: out.finish(),
    stderr: err.finish(),
  };
  if (exit.spawnError !== undefined) {
    const notFound = (exit.spawnError as NodeJS.ErrnoException).code === "ENOENT";
    throw new CommandError(notFound ? "not-found" : "spawn-failed", program, {
      cause: exit.spawnError,
    });
  }
  const failure: CommandErrorKind | undefined = exit.timedOut
    ? "timeout"
    : exit.aborted
      ? "aborted"
      : overflowed
        ? "output-limit"
        : undefined;
  if (failure !== undefined) throw new CommandError(failure, program, { result });
  return result;
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
