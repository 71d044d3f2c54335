import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bundledBin } from "./bundled-bin.js";
import { freePorts } from "./etcd-server.js";

/** The daemon as it ships (its bundle). */
export const DAEMON_BIN = bundledBin("debvisor-rpcd");
/** hvctl as it ships (its bundle). */
export const HVCTL_BIN = bundledBin("hvctl");

/** Arguments that start the daemon in dev mode with its data in `dir`, on free loopback ports. */
export function devDaemonArgs(dir: string): string[] {
  return ["--dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
}

/**
 * Starts the built daemon in dev mode in `dir` on free loopback ports, with
 * `config` (written as `dir`/rpcd.yaml; JSON is YAML) layered on the dev defaults.
 */
export function startDevDaemon(dir: string, config: object = {}): Promise<DaemonProcess> {
  const file = join(dir, "rpcd.yaml");
  writeFileSync(file, JSON.stringify(config));
  return startDaemonProcess([...devDaemonArgs(dir), "--config", file]);
}

/**
 * Starts another control-plane replica beside the dev daemon of `dir`: in
 * `dir`/`name`, with a copy of its `pki` (the same cluster CA and server
 * certificate), its own audit file, and `config` layered on the dev defaults
 * (a function gets the replica's directory, to place files there first).
 * The store in `config` is what makes it a replica of the same cluster.
 */
export function startReplica(
  dir: string,
  name: string,
  config: object | ((replicaDir: string) => object),
): Promise<DaemonProcess> {
  const own = join(dir, name);
  mkdirSync(own);
  cpSync(join(dir, "pki"), join(own, "pki"), { recursive: true });
  const layered = typeof config === "function" ? config(own) : config;
  const file = join(own, `${name}.yaml`);
  writeFileSync(file, JSON.stringify({ audit: { path: join(own, "audit.log") }, ...layered }));
  return startDaemonProcess([...devDaemonArgs(own), "--config", file]);
}

/** A daemon started as a child process, the way an operator or systemd starts it. */
export interface DaemonProcess {
  readonly proc: ChildProcess;
  readonly grpcAddress: string;
  readonly httpAddress: string;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Every other line of its stdout so far (e.g. a dev agent's, prefixed `[node-01] `). */
  readonly lines: string[];
  stderr(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** Kills the process if still running. */
  kill(): void;
}

/**
 * Starts `debvisor-rpcd` with `args` and waits (at most `timeoutMs`) for its
 * "serving" log line. `nodeArgs` go to node itself (e.g. `--cpu-prof`, which
 * NODE_OPTIONS does not allow).
 */
export function startDaemonProcess(
  args: readonly string[],
  options: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    timeoutMs?: number;
    nodeArgs?: readonly string[];
    /** A command that runs node, e.g. ["prlimit", "--nofile=256"]. */
    wrapper?: readonly string[];
  } = {},
): Promise<DaemonProcess> {
  const [file, ...pre] = [...(options.wrapper ?? []), process.execPath];
  // A daemon (not a subcommand) dies with this process, whatever ends it (a file's timeout).
  const serving = args[0]?.startsWith("--") ?? true;
  const own = serving ? ["--exit-with-stdin"] : [];
  const proc = spawn(
    file as string,
    [...pre, ...(options.nodeArgs ?? []), DAEMON_BIN, ...own, ...args],
    {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: [serving ? "pipe" : "ignore", "pipe", "pipe"],
    },
  );
  const logs: Record<string, unknown>[] = [];
  const lines: string[] = [];
  let err = "";
  let buffered = "";
  const exited = new Promise<number | string>((resolve) => {
    proc.once("exit", (code, signal) => resolve(code ?? signal ?? -1));
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`daemon did not become ready in time; stderr:\n${err}`));
    }, options.timeoutMs ?? 30_000);
    proc.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    proc.stdout?.on("data", (d: Buffer) => {
      buffered += d.toString();
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
        } catch {
          if (lines.length < 10_000) lines.push(line);
          // A daemon logging for people (log.format pretty): its "serving" line as fields.
          const pretty = / serving address=(\S+) httpAddress=(\S+)/.exec(line);
          if (pretty === null) continue;
          entry = { msg: "serving", address: pretty[1], httpAddress: pretty[2] };
        }
        if (entry.msg === "serving") {
          clearTimeout(timer);
          resolve({
            proc,
            grpcAddress: String(entry.address),
            httpAddress: String(entry.httpAddress),
            logs,
            lines,
            stderr: () => err,
            exited,
            kill: () => {
              if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
            },
          });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (${code}) before serving; stderr:\n${err}`));
    });
  });
}

/** Attempts of {@link onFreePort}. */
const PORT_ATTEMPTS = 3;

/**
 * Runs `start` with a port of 127.0.0.1 found free, and again with a new
 * one when another process took it in between and `start` failed with
 * "address already in use" (other test files run at once, and any outgoing
 * connection may get the port): up to 3 attempts. For a daemon listening
 * there: `onFreePort((port) => startDaemonProcess([... port ...]))`.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const [port] = await freePorts(1);
    if (port === undefined) throw new Error("no free port");
    try {
      return await start(port);
    } catch (err) {
      if (attempt >= PORT_ATTEMPTS || !/address already in use/.test(String(err))) throw err;
    }
  }
}

/** Runs a command to completion (bounded by `timeoutMs`), with `input` on its stdin, and returns its output. */
export function runProcess(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(file, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      timeout: options.timeoutMs ?? 30_000,
    });
    proc.stdin?.end(options.input);
    let stdout = "";
    let stderr = "";
    proc.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    proc.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    proc.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}
