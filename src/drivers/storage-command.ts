import { spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { RpcError } from "../core/index.js";

/** A command to run: a program and an argument array, never a shell line. */
export interface CommandSpec {
  readonly file: string;
  readonly args: readonly string[];
  /** Killed after this long (SIGTERM, then SIGKILL 2 s later). */
  readonly timeoutMs: number;
  /** Aborting kills the command the same way. */
  readonly signal?: AbortSignal;
  /** Variables added to the environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/** How a command ended. */
export interface CommandExit {
  /** Exit status; null when killed by a signal or never started. */
  readonly code: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
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

/** Starts commands somewhere: on this host, or (later) on another node through its agent. */
export interface CommandRunner {
  start(spec: CommandSpec): RunningCommand;
}

/** A finished command and what it printed. */
export interface CommandOutput extends CommandExit {
  readonly stdout: string;
  readonly stderr: string;
}

const KILL_GRACE_MS = 2000;
const MAX_STDOUT = 16 * 1024 * 1024;
const MAX_STDERR = 1024 * 1024;

/** Runs commands on this host with `spawn` (no shell), a timeout and an abort signal. */
export function createLocalRunner(): CommandRunner {
  return {
    start(spec) {
      const child = spawn(spec.file, [...spec.args], {
        shell: false,
        stdio: ["pipe", "pipe", "pipe"],
        env: { ...process.env, ...spec.env },
      });
      let timedOut = false;
      let aborted = false;
      let spawnError: Error | undefined;
      const kill = () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill("SIGTERM");
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        }, KILL_GRACE_MS).unref();
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, spec.timeoutMs);
      const onAbort = () => {
        aborted = true;
        kill();
      };
      if (spec.signal?.aborted) onAbort();
      else spec.signal?.addEventListener("abort", onAbort, { once: true });
      // A reader that stops early (the other side of a pipe died) must not crash the daemon.
      child.stdin.on("error", () => {});
      const exit = new Promise<CommandExit>((resolve) => {
        child.once("error", (err) => {
          spawnError = err;
        });
        child.once("close", (code, signal) => {
          clearTimeout(timer);
          spec.signal?.removeEventListener("abort", onAbort);
          resolve({ code, signal, timedOut, aborted, spawnError });
        });
      });
      return { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exit };
    },
  };
}

/** Runs a command to completion with stdin closed, collecting its output (bounded). */
export async function runCommand(runner: CommandRunner, spec: CommandSpec): Promise<CommandOutput> {
  const cmd = runner.start(spec);
  cmd.stdin.end();
  let truncated = false;
  const [stdout, stderr, exit] = await Promise.all([
    collect(cmd.stdout, MAX_STDOUT, () => {
      truncated = true;
    }),
    collect(cmd.stderr, MAX_STDERR),
    cmd.exit,
  ]);
  // A listing cut short would silently drop entries (the newest snapshots): refuse it.
  if (truncated)
    throw new RpcError("STORAGE_UNAVAILABLE", {
      cause: new Error(`${spec.file} ${spec.args.join(" ")}: output over ${MAX_STDOUT} bytes`),
    });
  return { ...exit, stdout, stderr };
}

/** Reads a stream to its end as UTF-8, keeping at most `max` bytes (`onOverflow` says when more came). */
export function collect(
  stream: Readable,
  max: number,
  onOverflow: () => void = () => {},
): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("data", (chunk: Buffer) => {
      if (size + chunk.length > max) onOverflow();
      if (size >= max) return;
      chunks.push(chunk.subarray(0, max - size));
      size += chunk.length;
    });
    stream.once("error", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.once("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

/**
 * The error for a command that did not succeed and whose output no rule
 * recognised: STORAGE_UNAVAILABLE (or CANCELLED when the caller gave up).
 * The command line and its stderr go in the cause, for the log only.
 */
export function commandFailed(spec: CommandSpec, out: CommandExit & { stderr?: string }): RpcError {
  if (out.aborted) return new RpcError("CANCELLED");
  const what = out.spawnError
    ? `could not start: ${out.spawnError.message}`
    : out.timedOut
      ? `timed out after ${spec.timeoutMs} ms`
      : `exited ${out.code ?? out.signal}: ${(out.stderr ?? "").trim().slice(0, 2000)}`;
  return new RpcError("STORAGE_UNAVAILABLE", {
    cause: new Error(`${spec.file} ${spec.args.join(" ")} ${what}`),
  });
}
