/**
 * A CommandRunner that replays recorded virsh output (test/fixtures/virsh/)
 * in a scripted order and checks that the driver asked for exactly the
 * recorded argument array each time. recorded.json comes from real virsh 9.0
 * (scripts/record-virsh-fixtures.mjs); written.json holds what libvirt's test
 * driver cannot produce (migration progress), in virsh's own formats.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  CommandError,
  type CommandResult,
  type CommandRunner,
  LineSplitter,
} from "../../src/drivers/index.js";

/** One recorded virsh run. */
export interface Recording {
  readonly args: readonly string[];
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr?: string;
  /** stderr written piece by piece with a pause between pieces (migration progress). */
  readonly stderrChunks?: readonly string[];
}

function load(file: string): Record<string, Recording> {
  const url = new URL(`../../../test/fixtures/virsh/${file}`, import.meta.url);
  return (JSON.parse(readFileSync(url, "utf8")) as { cases: Record<string, Recording> }).cases;
}
const FIXTURES: Record<string, Recording> = { ...load("recorded.json"), ...load("written.json") };

/** The fixture `name`, optionally with some fields replaced. */
export function fixture(name: string, change: Partial<Recording> = {}): Recording {
  const r = FIXTURES[name];
  if (r === undefined) throw new Error(`no virsh fixture named ${name}`);
  return { ...r, ...change };
}

/** One scripted call: what it replies, and how it ends when killed. */
export interface ReplayStep {
  readonly reply: Recording;
  /** What the process left when it was killed (abort or timeout); default exit 1, no output. */
  readonly whenKilled?: Recording;
  /** Never finishes by itself: only an abort or the timeout ends it. */
  readonly hang?: boolean;
}

/** What the driver asked for. */
export interface ReplayCall {
  readonly args: readonly string[];
  /** The signal the runner would have sent, when the call was killed. */
  killedWith?: NodeJS.Signals;
  killedBy?: "abort" | "timeout";
}

/** A replaying runner and what it saw. */
export interface ReplayRunner {
  readonly run: CommandRunner;
  readonly calls: ReplayCall[];
  /** Steps not used yet. */
  remaining(): number;
}

/**
 * Replays `steps` in order. A call whose argv differs from its step's
 * recording fails the test (the AssertionError surfaces from the driver).
 */
export function createReplayRunner(
  steps: readonly (ReplayStep | Recording)[],
  options: { chunkDelayMs?: number } = {},
): ReplayRunner {
  const queue = steps.map((s) => ("reply" in s ? s : { reply: s }));
  const calls: ReplayCall[] = [];
  const chunkDelayMs = options.chunkDelayMs ?? 5;

  const run: CommandRunner = (program, args, runOptions) => {
    if (runOptions.signal?.aborted) return Promise.reject(new CommandError("aborted", program));
    const step = queue.shift();
    const call: ReplayCall = { args: [...args] };
    calls.push(call);
    assert.equal(program, "virsh");
    assert.equal(runOptions.env?.LC_ALL, "C", "virsh runs under LC_ALL=C");
    assert.ok(step !== undefined, `unexpected virsh call: ${args.join(" ")}`);
    assert.deepEqual(args, step.reply.args);
    const { reply } = step;
    const result = (r: Recording): CommandResult => ({
      exitCode: r.exitCode,
      signal: null,
      stdout: r.stdout,
      stderr: r.stderr ?? (r.stderrChunks ?? []).join(""),
    });

    return new Promise<CommandResult>((resolve, reject) => {
      let done = false;
      const timers: NodeJS.Timeout[] = [];
      const kill = (by: "abort" | "timeout") => {
        if (done) return;
        done = true;
        for (const t of timers) clearTimeout(t);
        call.killedBy = by;
        call.killedWith = runOptions.killSignal ?? "SIGTERM";
        const left = step.whenKilled ?? { args, exitCode: 1, stdout: "", stderr: "" };
        reject(
          new CommandError(by === "abort" ? "aborted" : "timeout", program, {
            result: result(left),
          }),
        );
      };
      runOptions.signal?.addEventListener("abort", () => kill("abort"), { once: true });
      timers.push(setTimeout(() => kill("timeout"), runOptions.timeoutMs));
      if (step.hang) return;
      const lines =
        runOptions.onStderrLine === undefined
          ? undefined
          : new LineSplitter(runOptions.onStderrLine);
      const chunks = reply.stderrChunks ?? [];
      const finish = () => {
        if (done) return;
        done = true;
        for (const t of timers) clearTimeout(t);
        lines?.end();
        resolve(result(reply));
      };
      if (lines !== undefined && reply.stderr !== undefined) lines.push(reply.stderr);
      chunks.forEach((chunk, i) => {
        timers.push(
          setTimeout(() => {
            if (!done) lines?.push(chunk);
          }, chunkDelayMs * i),
        );
      });
      timers.push(setTimeout(finish, chunkDelayMs * chunks.length));
    });
  };

  return { run, calls, remaining: () => queue.length };
}
