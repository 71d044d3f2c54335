import type { Readable } from "node:stream";
import { abortError, RpcError } from "../core/index.js";
import { type CommandExit, type RunningCommand, startCommand } from "./command-runner.js";

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

export type { CommandExit, RunningCommand };

/** Starts commands somewhere: on this host, or (later) on another node through its agent. */
export interface CommandRunner {
  start(spec: CommandSpec): RunningCommand;
}

/** A finished command and what it printed. */
export interface CommandOutput extends CommandExit {
  readonly stdout: string;
  readonly stderr: string;
}

const MAX_STDOUT = 16 * 1024 * 1024;
const MAX_STDERR = 1024 * 1024;

/** Runs commands on this host with the drivers' one {@link startCommand}. */
export function createLocalRunner(): CommandRunner {
  return { start: (spec) => startCommand(spec.file, spec.args, spec) };
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
  if (out.aborted) return abortError(spec.signal);
  const what = out.spawnError
    ? `could not start: ${out.spawnError.message}`
    : out.timedOut
      ? `timed out after ${spec.timeoutMs} ms`
      : `exited ${out.code ?? out.signal}: ${(out.stderr ?? "").trim().slice(0, 2000)}`;
  return new RpcError("STORAGE_UNAVAILABLE", {
    cause: new Error(`${spec.file} ${spec.args.join(" ")} ${what}`),
  });
}
