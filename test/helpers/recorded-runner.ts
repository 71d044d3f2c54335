import { readFileSync } from "node:fs";
import { PassThrough, Writable } from "node:stream";
import type {
  StorageCommandExit as CommandExit,
  StorageCommandRunner as CommandRunner,
  RunningCommand,
} from "../../src/drivers/index.js";

/** One recorded command: where it ran, its argv, and what it printed and returned. */
interface Entry {
  readonly node: string | undefined;
  readonly argv: string;
  readonly stdout: Buffer;
  readonly stderr: string;
  /** Bytes the command reads on stdin before exiting (a `zfs receive`); undefined: none awaited. */
  readonly stdinBytes: number | undefined;
  readonly code: number;
  readonly line: number;
}

/** Commands replayed from a recorded transcript, in order. */
export interface Replay {
  /** A runner for commands on `nodeId` (undefined: no node, as rbd runs). */
  runnerFor(nodeId: string | undefined): CommandRunner;
  /** Every argv started so far, as `[node] argv`. */
  readonly started: string[];
  /** Fails unless every recorded command was started. */
  assertDone(): void;
}

/**
 * Reads section `=== name` of a transcript file. Format, line by line:
 *   `$ [node] argv...`  a command (the `[node]` is optional), then its output:
 *   `2> text`           a line of stderr
 *   `@stdout-bytes N`   N bytes of binary stdout (a send stream)
 *   `@stdin-bytes N`    it reads N bytes from stdin, then exits
 *   `? N`               its exit status (ends the entry)
 *   anything else       a line of stdout (tabs and all)
 * Lines starting with `#` are comments.
 */
export function loadTranscript(file: URL, section: string): Entry[] {
  const lines = readFileSync(file, "utf8").split("\n");
  const start = lines.indexOf(`=== ${section}`);
  if (start < 0) throw new Error(`${file.pathname}: no section ${section}`);
  const entries: Entry[] = [];
  let current:
    | {
        node?: string;
        argv: string;
        out: string[];
        bytes: number;
        err: string[];
        stdin?: number;
        line: number;
      }
    | undefined;
  for (let i = start + 1; i < lines.length; i++) {
    const text = lines[i] as string;
    if (text.startsWith("=== ")) break;
    if (current === undefined) {
      if (text === "" || text.startsWith("#")) continue;
      const m = /^\$ (?:\[([^\]]+)\] )?(.+)$/.exec(text);
      if (m === null) throw new Error(`${file.pathname}:${i + 1}: expected "$ command"`);
      current = { node: m[1], argv: m[2] as string, out: [], bytes: 0, err: [], line: i + 1 };
      continue;
    }
    const exit = /^\? (\d+)$/.exec(text);
    const bytes = /^@stdout-bytes (\d+)$/.exec(text);
    const stdin = /^@stdin-bytes (\d+)$/.exec(text);
    if (exit !== null) {
      const out = current.out.length === 0 ? "" : `${current.out.join("\n")}\n`;
      entries.push({
        node: current.node,
        argv: current.argv,
        stdout: current.bytes > 0 ? Buffer.alloc(current.bytes) : Buffer.from(out),
        stderr: current.err.length === 0 ? "" : `${current.err.join("\n")}\n`,
        stdinBytes: current.stdin,
        code: Number(exit[1]),
        line: current.line,
      });
      current = undefined;
    } else if (bytes !== null) current.bytes = Number(bytes[1]);
    else if (stdin !== null) current.stdin = Number(stdin[1]);
    else if (text.startsWith("2> ")) current.err.push(text.slice(3));
    else current.out.push(text);
  }
  if (current !== undefined) throw new Error(`${file.pathname}:${current.line}: no "? code" line`);
  return entries;
}

/** A replay of `entries`: each started command must be the next one recorded, on the same node. */
export function createReplay(entries: readonly Entry[]): Replay {
  let next = 0;
  const started: string[] = [];
  const problems: string[] = [];
  const start = (
    node: string | undefined,
    file: string,
    args: readonly string[],
    signal?: AbortSignal,
  ): RunningCommand => {
    const argv = [file, ...args].join(" ");
    const shown = `${node === undefined ? "" : `[${node}] `}${argv}`;
    started.push(shown);
    const entry = entries[next];
    if (entry === undefined || entry.argv !== argv || entry.node !== node)
      throw new Error(
        `unexpected command ${shown}; the transcript expects ${entry === undefined ? "nothing more" : `${entry.node === undefined ? "" : `[${entry.node}] `}${entry.argv} (line ${entry.line})`}`,
      );
    next += 1;
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let received = 0;
    let finish: (() => void) | undefined;
    const stdinDone = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const stdin = new Writable({
      write(chunk: Buffer, _enc, callback) {
        received += chunk.length;
        callback();
      },
      final(callback) {
        finish?.();
        callback();
      },
    });
    const exit = new Promise<CommandExit>((resolve) => {
      const done = (aborted: boolean) =>
        resolve({
          code: aborted ? null : entry.code,
          signal: aborted ? "SIGTERM" : null,
          timedOut: false,
          aborted,
        });
      signal?.addEventListener("abort", () => done(true), { once: true });
      setImmediate(async () => {
        stderr.end(entry.stderr);
        stdout.end(entry.stdout);
        if (entry.stdinBytes !== undefined && entry.code === 0) {
          await stdinDone;
          if (received !== entry.stdinBytes)
            problems.push(
              `${argv} read ${received} bytes on stdin; the transcript says ${entry.stdinBytes}`,
            );
        }
        done(false);
      });
    });
    return { stdin, stdout, stderr, exit };
  };
  return {
    started,
    runnerFor: (node) => ({ start: (spec) => start(node, spec.file, spec.args, spec.signal) }),
    assertDone() {
      if (problems.length > 0) throw new Error(problems.join("; "));
      if (next !== entries.length)
        throw new Error(
          `recorded commands never run, from line ${entries[next]?.line}: ${entries
            .slice(next)
            .map((e) => e.argv)
            .join("; ")}`,
        );
    },
  };
}
