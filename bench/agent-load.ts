// The agents scenario's load: N agent streams held by forked load clients
// (agent-load-client.ts, up to STREAMS_PER_CLIENT each, each on its own event
// loop) against one server, and what the server process costs meanwhile.
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type {
  AgentLoadReport,
  AgentLoadStart,
  LoadProgress,
  LoadStats,
} from "./agent-load-client.js";
import { cpuSeconds } from "./bench-support.js";

const LOAD_CLIENT = fileURLToPath(new URL("./agent-load-client.js", import.meta.url));
const CONNECT_CONCURRENCY = 64;
/** Streams one load client process holds at most; N above it is split over several. */
const STREAMS_PER_CLIENT = 2500;
/** Every stream must be welcomed by then (the run fails otherwise): 2 min + 60 ms a stream. */
const connectTimeoutMs = (agents: number) => 120_000 + 60 * agents;

/** Resident set size of a process in KiB, from /proc. */
export function rssKib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m === null ? Number.NaN : Number(m[1]);
}

/** The server's V8 heap in use in KiB, from its /metrics (the daemon's gauge name). */
export async function heapKib(httpAddress: string): Promise<number> {
  const res = await fetch(`http://${httpAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const m = /^debvisor_rpcd_nodejs_heap_size_used_bytes (\S+)/m.exec(await res.text());
  return m === null ? Number.NaN : Number(m[1]) / 1024;
}

/** The soft limit on open files of a process, from /proc. */
function fdLimit(pid: number): number {
  const m = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  return m === null ? Number.NaN : Number(m[1]);
}

/** Resolves with the first report the client sends that `pick` accepts, within `timeoutMs`. */
function nextReport<T>(
  client: ChildProcess,
  timeoutMs: number,
  pick: (m: AgentLoadReport) => T | undefined,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off("message", on);
      reject(new Error(`load client: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (m: AgentLoadReport) => {
      const v = pick(m);
      if (v === undefined) return;
      clearTimeout(timer);
      client.off("message", on);
      resolve(v);
    };
    client.on("message", on);
    client.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`load client exited (${code})`));
    });
  });
}

/** What the load clients say once every stream was tried. */
export interface Connected {
  readonly streams: number;
  readonly failed: number;
  readonly retried: number;
  readonly ms: number;
  readonly firstError: string | undefined;
}

/** N agent streams being held. */
export interface AgentLoad {
  /** Resolves when every stream was tried (each welcomed, or failed after its attempts). */
  readonly connected: Promise<Connected>;
  /** Heartbeats sent so far. */
  heartbeats(): number;
  /** Streams that ended after their welcome, and the first error seen. */
  ended(): { readonly count: number; readonly firstError: string | undefined };
  /** When each dispatched operation reached its agent (load client clock, ms). */
  readonly receipts: ReadonlyMap<string, number>;
  /** Closes every stream and ends the load clients. */
  stop(): Promise<void>;
}

/** What {@link startAgentLoad} needs. */
export interface AgentLoadOptions {
  /** The server's gRPC address. */
  readonly address: string;
  /** The CA the server trusts for client certificates (and its key, to issue them). */
  readonly caCertFile: string;
  readonly caKeyFile: string;
  readonly agents: number;
  readonly nodePrefix: string;
  readonly heartbeatIntervalMs: number;
  readonly vmsPerNode: number;
  /** Every heartbeat lists the VMs (see AgentLoadStart). */
  readonly fullReports?: boolean;
  /** The server process, for the progress lines (RSS, CPU, fd limit). */
  readonly serverPid: number;
  log(line: string): void;
}

/** Starts the load clients; they issue the nodes' certificates, then connect. */
export async function startAgentLoad(o: AgentLoadOptions): Promise<AgentLoad> {
  const count = Math.ceil(o.agents / STREAMS_PER_CLIENT);
  const clients: ChildProcess[] = [];
  const latest = new Map<ChildProcess, { stats?: LoadStats; progress?: LoadProgress }>();
  const receipts = new Map<string, number>();
  const stop = async () => {
    await Promise.all(
      clients
        .filter((c) => c.exitCode === null)
        .map(async (c) => {
          const exited = new Promise((r) => c.once("exit", r));
          c.send({ type: "stop" });
          const timer = setTimeout(() => c.kill("SIGKILL"), 10_000);
          await exited;
          clearTimeout(timer);
        }),
    );
  };
  for (let c = 0; c < count; c++) {
    const first = Math.floor((o.agents * c) / count);
    const child = fork(LOAD_CLIENT, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    clients.push(child);
    latest.set(child, {});
    child.on("message", (m: AgentLoadReport) => {
      const mine = latest.get(child) ?? {};
      if (m.type === "stats") mine.stats = m;
      else if (m.type === "progress") mine.progress = m;
      else if (m.type === "receipts")
        for (const [id, at] of Object.entries(m.at)) receipts.set(id, at);
    });
    const start: AgentLoadStart = {
      type: "start",
      address: o.address,
      caCertFile: o.caCertFile,
      caKeyFile: o.caKeyFile,
      agents: Math.floor((o.agents * (c + 1)) / count) - first,
      first,
      prefix: o.nodePrefix,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      vmsPerNode: o.vmsPerNode,
      fullReports: o.fullReports ?? false,
      connectConcurrency: Math.ceil(CONNECT_CONCURRENCY / count),
    };
    child.send(start);
  }
  const all = <T>(timeoutMs: number, pick: (m: AgentLoadReport) => T | undefined) =>
    Promise.all(clients.map((c) => nextReport(c, timeoutMs, pick)));
  const sum = (f: (s: LoadStats) => number) =>
    [...latest.values()].reduce((t, l) => t + (l.stats === undefined ? 0 : f(l.stats)), 0);
  try {
    const issued = await all(120_000, (m) => (m.type === "issued" ? m : undefined));
    o.log(
      `  ${o.agents} node certificates issued in ${(Math.max(...issued.map((i) => i.ms)) / 1000).toFixed(1)} s by ${count} load client(s)`,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  const t0 = performance.now();
  const progress = setInterval(() => {
    const p = [...latest.values()].map((l) => l.progress);
    const total = (f: (x: LoadProgress) => number) =>
      p.reduce((t, x) => t + (x === undefined ? 0 : f(x)), 0);
    o.log(
      `    ${((performance.now() - t0) / 1000).toFixed(0)} s: ${total((x) => x.streams)} streams welcomed, ${total((x) => x.failed)} failed, ${total((x) => x.heartbeats)} heartbeats sent; server RSS ${(rssKib(o.serverPid) / 1024).toFixed(0)} MiB, CPU ${cpuSeconds(o.serverPid).toFixed(0)} s`,
    );
  }, 10_000);
  const connected = all(connectTimeoutMs(o.agents), (m) => (m.type === "connected" ? m : undefined))
    .finally(() => clearInterval(progress))
    .then((parts) => {
      const c: Connected = {
        streams: parts.reduce((t, x) => t + x.streams, 0),
        failed: parts.reduce((t, x) => t + x.failed, 0),
        retried: parts.reduce((t, x) => t + x.retried, 0),
        ms: Math.max(...parts.map((x) => x.ms)),
        firstError: parts.find((x) => x.firstError !== undefined)?.firstError,
      };
      o.log(
        `  ${c.streams} streams welcomed in ${(c.ms / 1000).toFixed(1)} s, ${c.failed} failed (${c.retried} attempts tried again)${c.firstError === undefined ? "" : ` (first: ${c.firstError})`}; server fd limit ${fdLimit(o.serverPid)}, client fd limit ${fdLimit(clients[0]?.pid as number)}`,
      );
      return c;
    });
  return {
    connected,
    heartbeats: () => sum((x) => x.heartbeats),
    ended: () => ({
      count: sum((x) => x.ended),
      firstError: [...latest.values()].find((l) => l.stats?.firstError !== undefined)?.stats
        ?.firstError,
    }),
    receipts,
    stop,
  };
}
