// The servers under test, each its own process on loopback: the built
// daemon (dist/src/bin/debvisor-rpcd.js) with a benchmark configuration, the
// two ceilings of the request path (ceiling-servers.ts) and the two of agent
// streams (agent-ceiling-server.ts). Each can be started with
// node --cpu-prof, and is stopped with SIGTERM so the profile is written.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDaemonProcess } from "../test/helpers/daemon-process.js";
import { cpuSeconds } from "./bench-support.js";

const CEILING_BIN = fileURLToPath(new URL("./ceiling-servers.js", import.meta.url));
const AGENT_CEILING_BIN = fileURLToPath(new URL("./agent-ceiling-server.js", import.meta.url));

/** A running server under test. */
export interface BenchServer {
  readonly name: string;
  /** Its process id (for /proc). */
  readonly pid: number;
  /** gRPC HOST:PORT (TLS). */
  readonly address: string;
  /** HOST:PORT of its /metrics. */
  readonly metricsAddress: string;
  /** Its /metrics text now. */
  metrics(): Promise<string>;
  /** CPU seconds the server process has used so far. */
  cpuSeconds(): number;
  /** SIGTERM, waits for the exit (SIGKILL after 30 s); resolves with the CPU profile written, if any. */
  stop(): Promise<string | undefined>;
}

/** Where to write CPU profiles; undefined: no profiling. */
export type ProfileDir = string | undefined;

export function profileArgs(name: string, profileDir: ProfileDir): string[] {
  return profileDir === undefined
    ? []
    : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name}.cpuprofile`];
}

function serverOf(
  name: string,
  proc: ChildProcess,
  exited: Promise<unknown>,
  address: string,
  metricsAddress: string,
  profileDir: ProfileDir,
): BenchServer {
  const pid = proc.pid as number;
  return {
    name,
    pid,
    address,
    metricsAddress,
    async metrics() {
      const res = await fetch(`http://${metricsAddress}/metrics`, {
        signal: AbortSignal.timeout(10_000),
      });
      return res.text();
    },
    cpuSeconds: () => cpuSeconds(pid),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
        await exited;
        clearTimeout(timer);
      }
      const profile = profileDir === undefined ? undefined : join(profileDir, `${name}.cpuprofile`);
      return profile !== undefined && existsSync(profile) ? profile : undefined;
    },
  };
}

/** Starts the built daemon with `configFile` (which must listen on 127.0.0.1). */
export async function startDaemonServer(
  name: string,
  configFile: string,
  profileDir: ProfileDir,
): Promise<BenchServer> {
  const d = await startDaemonProcess(["--config", configFile], {
    nodeArgs: profileArgs(name, profileDir),
    timeoutMs: 60_000,
  });
  return serverOf(name, d.proc, d.exited, d.grpcAddress, d.httpAddress, profileDir);
}

/** Files a ceiling server needs: TLS material and the encoded ListNodes response. */
export interface CeilingFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly response: string;
}

/** Starts a ceiling server (`http2` or `grpc-js`) and waits until it listens. */
export function startCeilingServer(
  name: string,
  kind: "http2" | "grpc-js",
  files: CeilingFiles,
  profileDir: ProfileDir,
): Promise<BenchServer> {
  return startListening(name, CEILING_BIN, profileDir, [
    ...tlsArgs(kind, files),
    "--response",
    files.response,
  ]);
}

/** Starts an agent-stream ceiling server (agent-ceiling-server.ts) and waits until it listens. */
export function startAgentCeilingServer(
  name: string,
  kind: "http2" | "grpc-js",
  files: Omit<CeilingFiles, "response">,
  profileDir: ProfileDir,
): Promise<BenchServer> {
  return startListening(name, AGENT_CEILING_BIN, profileDir, tlsArgs(kind, files));
}

/** The arguments every ceiling server takes: its kind and its TLS material. */
function tlsArgs(kind: string, files: Omit<CeilingFiles, "response">): string[] {
  return ["--kind", kind, "--cert", files.cert, "--key", files.key, "--ca", files.ca];
}

/** Runs `bin` with `args` until it prints {"address","metricsAddress"} as its first line. */
function startListening(
  name: string,
  bin: string,
  profileDir: ProfileDir,
  args: readonly string[],
): Promise<BenchServer> {
  const proc = spawn(process.execPath, [...profileArgs(name, profileDir), bin, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`${name} did not start in time: ${err}`));
    }, 30_000);
    proc.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      const { address, metricsAddress } = JSON.parse(out.slice(0, nl)) as Record<string, string>;
      resolve(
        serverOf(name, proc, exited, address as string, metricsAddress as string, profileDir),
      );
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening: ${err}`));
    });
  });
}
