/**
 * One long-lived interactive `virsh -c URI`, fed one command at a time on
 * stdin, offered as a {@link CommandRunner} so the libvirt driver runs over it
 * unchanged.
 *
 * Why: every `virsh` process opens its own connection, and libvirt's test
 * driver (`test:///default`, or `test:///path/node.xml` describing a node)
 * keeps its domains in that connection's memory: a `start` by one process is
 * gone for the next. One interactive process keeps one connection, so the
 * test driver behaves like a real node across calls. (Against a real
 * libvirtd it also spares a process and a connection per call.)
 *
 * Protocol: after each command the session writes `echo --err TOKEN` and
 * `echo TOKEN` with a fresh random token. The command's stderr is everything
 * before the `error: TOKEN` line; its stdout is what follows the echoed
 * command line and precedes the echoed `echo --err TOKEN` line (virsh's line
 * reader echoes each input line after its prompt even when stdin is a pipe).
 * Interactive virsh has no exit status per command: the session reports exit
 * code 1 when the command's stderr has an `error:` line, 0 otherwise, which is
 * what virsh's own exit status means.
 *
 * Aborting a call rejects it at once; a command already written runs to its
 * end (its output is dropped) because killing the process would reset the
 * node's state. A command that times out or prints past the bound does kill
 * the process; the next call starts a fresh one (with fresh test-driver state).
 * Arguments must be plain tokens (no blanks, quotes, `;`, `#`, backslashes):
 * interactive virsh parses its input like a shell would.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import {
  CommandError,
  type CommandResult,
  type CommandRunner,
  LineSplitter,
  type RunOptions,
} from "./command-runner.js";

/** Options of {@link createVirshSession}. */
export interface VirshSessionOptions {
  /** The connection URI, for example `test:///default`. */
  readonly uri: string;
  /** The virsh program (default `virsh`). */
  readonly virsh?: string;
  /** Bound on one command's output in bytes (default 1 MiB). */
  readonly maxOutputBytes?: number;
}

/** A running interactive virsh. */
export interface VirshSession {
  /** Runs `virsh -c URI ARGS...` inside the session; `program` and the `-c URI` prefix must match. */
  readonly run: CommandRunner;
  /** Commands run so far (tests use it to prove that refused input ran nothing). */
  readonly commandCount: () => number;
  /** Ends the process; later calls start a new one. */
  close(): Promise<void>;
}

/** What interactive virsh would split, quote or treat as a comment. */
const PLAIN_TOKEN = /^[A-Za-z0-9_.:/@%+=,&?[\]-]+$/;

interface Pending {
  readonly line: string;
  readonly token: string;
  readonly options: RunOptions;
  readonly resolve: (r: CommandResult) => void;
  readonly reject: (e: Error) => void;
  settled: boolean;
}

/** Starts nothing yet: the process starts with the first command. */
export function createVirshSession(options: VirshSessionOptions): VirshSession {
  const virsh = options.virsh ?? "virsh";
  const maxOutput = options.maxOutputBytes ?? 1024 * 1024;
  let proc: Process | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  let count = 0;

  const run: CommandRunner = (program, args, runOptions) => {
    if (program !== virsh || args[0] !== "-c" || args[1] !== options.uri) {
      throw new TypeError(`virsh session: runs only ${virsh} -c ${options.uri}`);
    }
    const rest = args.slice(2);
    if (rest.length === 0 || !rest.every((a) => PLAIN_TOKEN.test(a))) {
      throw new TypeError("virsh session: arguments must be plain tokens");
    }
    if (runOptions.signal?.aborted) return Promise.reject(new CommandError("aborted", program));
    return new Promise<CommandResult>((resolve, reject) => {
      const pending: Pending = {
        line: rest.join(" "),
        token: `dv${randomBytes(8).toString("hex")}`,
        options: runOptions,
        resolve,
        reject,
        settled: false,
      };
      const onAbort = () => settle(pending, new CommandError("aborted", program));
      runOptions.signal?.addEventListener("abort", onAbort, { once: true });
      queue = queue.then(async () => {
        if (!pending.settled) {
          count += 1;
          proc ??= new Process(virsh, options.uri, maxOutput);
          try {
            const result = await proc.execute(pending);
            settle(pending, result);
          } catch (e) {
            proc.kill();
            proc = undefined;
            settle(pending, e as Error);
          }
        }
        runOptions.signal?.removeEventListener("abort", onAbort);
      });
    });
  };

  return {
    run,
    commandCount: () => count,
    async close() {
      await queue.catch(() => {});
      proc?.kill();
      proc = undefined;
    },
  };
}

function settle(p: Pending, outcome: CommandResult | Error): void {
  if (p.settled) return;
  p.settled = true;
  if (outcome instanceof Error) p.reject(outcome);
  else p.resolve(outcome);
}

/** The virsh process and the parsing of its two streams. */
class Process {
  private readonly child: ChildProcessWithoutNullStreams;
  private stdout = "";
  private stderr = "";
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private wake: (() => void) | undefined;
  private prompt: string | undefined;
  private spawnError: Error | undefined;

  constructor(
    private readonly program: string,
    uri: string,
    private readonly maxOutput: number,
  ) {
    this.child = spawn(program, ["-c", uri], {
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, LC_ALL: "C", LANG: "C" },
    });
    const outDecoder = new StringDecoder("utf8");
    const errDecoder = new StringDecoder("utf8");
    this.child.stdout.on("data", (b: Buffer) => {
      this.stdout += outDecoder.write(b);
      this.poke();
    });
    this.child.stderr.on("data", (b: Buffer) => {
      this.stderr += errDecoder.write(b);
      this.poke();
    });
    this.child.stdin.on("error", () => {
      // The process died; "close" reports it.
    });
    this.child.on("error", (e) => {
      this.exited = { code: null, signal: null };
      this.spawnError = e;
      this.poke();
    });
    this.child.on("close", (code, signal) => {
      this.exited ??= { code, signal };
      this.poke();
    });
  }

  kill(): void {
    if (this.exited === undefined) this.child.kill("SIGKILL");
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Waits until `ready()` returns a value, the process exits, or `timedOut()` says so. */
  private async until<T>(
    ready: () => T | undefined,
    timedOut: () => boolean,
    onProgress?: () => void,
  ): Promise<T | "exited"> {
    for (;;) {
      onProgress?.();
      const value = ready();
      if (value !== undefined) return value;
      if (this.exited !== undefined) return "exited";
      if (this.stdout.length + this.stderr.length > this.maxOutput) {
        throw new CommandError("output-limit", this.program);
      }
      if (timedOut()) throw new CommandError("timeout", this.program);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  async execute(p: Pending): Promise<CommandResult> {
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      this.poke();
    }, p.options.timeoutMs);
    try {
      return await this.exchange(p, () => expired);
    } finally {
      clearTimeout(timer);
    }
  }

  private async exchange(p: Pending, timedOut: () => boolean): Promise<CommandResult> {
    if (this.prompt === undefined) await this.handshake(timedOut);
    this.child.stdin.write(`${p.line}\necho --err ${p.token}\necho ${p.token}\n`);
    const prompt = this.prompt ?? "";
    const errMark = `error: ${p.token}\n`;
    const outMark = `${prompt}echo ${p.token}\n${p.token}\n`;
    const splitter =
      p.options.onStderrLine === undefined ? undefined : new LineSplitter(p.options.onStderrLine);
    let fed = 0;
    const feed = () => {
      if (splitter === undefined) return;
      const end = this.stderr.indexOf(errMark);
      const upto = end === -1 ? this.stderr.length : end;
      if (upto > fed) splitter.push(this.stderr.slice(fed, upto));
      fed = upto;
    };
    const outcome = await this.until(
      () => (this.stderr.includes(errMark) && this.stdout.includes(outMark) ? true : undefined),
      timedOut,
      feed,
    );
    splitter?.end();
    if (outcome === "exited") {
      if (this.spawnError !== undefined) {
        const notFound = (this.spawnError as NodeJS.ErrnoException).code === "ENOENT";
        throw new CommandError(notFound ? "not-found" : "spawn-failed", this.program, {
          cause: this.spawnError,
        });
      }
      // virsh ended (it could not connect, or it was killed): report it as the command's failure.
      return {
        exitCode: this.exited?.code ?? 1,
        signal: this.exited?.signal ?? null,
        stdout: "",
        stderr: this.stderr,
      };
    }
    const errEnd = this.stderr.indexOf(errMark);
    const stderr = this.stderr.slice(0, errEnd);
    this.stderr = this.stderr.slice(errEnd + errMark.length);
    const outEnd = this.stdout.indexOf(outMark);
    let stdout = this.stdout.slice(0, outEnd);
    this.stdout = this.stdout.slice(outEnd + outMark.length);
    const echoed = stdout.indexOf(`${p.line}\n`);
    if (echoed !== -1) stdout = stdout.slice(echoed + p.line.length + 1);
    const errEcho = stdout.lastIndexOf(`${prompt}echo --err ${p.token}\n`);
    if (errEcho !== -1) stdout = stdout.slice(0, errEcho);
    return { exitCode: /^error: /m.test(stderr) ? 1 : 0, signal: null, stdout, stderr };
  }

  /** Learns the prompt (`virsh # ` as root, `virsh > ` otherwise) from an echo. */
  private async handshake(timedOut: () => boolean): Promise<void> {
    const token = `dv${randomBytes(8).toString("hex")}`;
    this.child.stdin.write(`echo --err ${token}\necho ${token}\n`);
    const found = await this.until(() => {
      const at = this.stdout.indexOf(`echo ${token}\n${token}\n`);
      return at === -1 || !this.stderr.includes(`error: ${token}\n`) ? undefined : at;
    }, timedOut);
    if (found === "exited") return;
    const lineStart = this.stdout.lastIndexOf("\n", found) + 1;
    this.prompt = this.stdout.slice(lineStart, found);
    this.stdout = this.stdout.slice(found + `echo ${token}\n${token}\n`.length);
    const errAt = this.stderr.indexOf(`error: ${token}\n`);
    this.stderr = this.stderr.slice(errAt + `error: ${token}\n`.length);
  }
}
