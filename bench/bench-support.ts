// Shared by the benchmarks: running h2load and reading its results, gRPC
// frames, percentiles and medians, server CPU time, the servers' call
// counters, and the check that decides whether a run counts.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

/** What one h2load run measured. */
export interface H2loadResult {
  readonly reqPerSec: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Mean time to connect (TCP and TLS), ms. */
  readonly connectMeanMs: number;
}

/** Runs h2load (bounded by -n and a timeout) and parses its summary and per-request log. */
export function runH2load(
  args: readonly string[],
  logFile: string,
  timeoutMs = 120_000,
): Promise<H2loadResult> {
  return new Promise((resolve, reject) => {
    const p = spawn("h2load", [...args, `--log-file=${logFile}`], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMs,
    });
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.once("error", reject);
    p.once("close", (code, signal) => {
      if (code !== 0) return reject(new Error(`h2load exited ${code ?? signal}:\n${out}`));
      try {
        const summary = parseH2loadSummary(out);
        const latencies = parseH2loadLog(readFileSync(logFile, "utf8"));
        resolve({
          ...summary,
          p50Ms: percentile(latencies, 0.5),
          p99Ms: percentile(latencies, 0.99),
        });
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** The throughput, request counts and mean connect time of h2load's summary. */
export function parseH2loadSummary(
  out: string,
): Omit<H2loadResult, "p50Ms" | "p99Ms"> & { done: number } {
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(
    out,
  );
  const connect = /time for connect:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b/.exec(out);
  if (rps === null || req === null) throw new Error(`cannot parse h2load output:\n${out}`);
  const unit = { us: 0.001, ms: 1, s: 1000 }[(connect?.[2] ?? "ms") as "us" | "ms" | "s"];
  return {
    reqPerSec: Number(rps[1]),
    done: Number(req[1]),
    succeeded: Number(req[2]),
    failed: Number(req[3]),
    connectMeanMs: connect === null ? 0 : Number(connect[1]) * unit,
  };
}

/** Request latencies (ms, sorted) from h2load's --log-file (start µs, status, duration µs). */
export function parseH2loadLog(text: string): number[] {
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => Number(l.split("\t")[2]) / 1000)
    .sort((a, b) => a - b);
}

/** The nearest-rank percentile `q` (0..1) of sorted values; 0 for none. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] as number;
}

/** The median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** The variants in the order of one round: rotated each round so none is always first (or last). */
export function roundOrder<T>(variants: readonly T[], round: number): T[] {
  const k = variants.length === 0 ? 0 : round % variants.length;
  return [...variants.slice(k), ...variants.slice(0, k)];
}

/** True when h2load is installed. */
export function haveH2load(): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn("h2load", ["--version"], { stdio: "ignore" });
    p.once("error", () => resolve(false));
    p.once("close", (code) => resolve(code === 0));
  });
}

/** A gRPC message frame: flag 0 (uncompressed), 4-byte length, the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** The message of a body holding exactly one uncompressed gRPC frame, or why it is not one. */
export function grpcMessage(body: Buffer): Buffer | string {
  if (body.length < 5) return `response body of ${body.length} bytes is not a gRPC frame`;
  if (body[0] !== 0) return "response frame is compressed";
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length)
    return `response frame announces ${length} bytes but carries ${body.length - 5}`;
  return body.subarray(5);
}

let ticksPerSecond: number | undefined;

/** CPU seconds (user + system) a process has used so far, from /proc. */
export function cpuSeconds(pid: number): number {
  ticksPerSecond ??=
    Number(execFileSync("getconf", ["CLK_TCK"], { timeout: 5000 }).toString().trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** Calls a server counted for one method: those that ended OK, and all others. */
export interface CallCounts {
  readonly ok: number;
  readonly other: number;
}

/**
 * Reads `debvisor_rpc_calls_total{service,method,code}` for one method from
 * Prometheus text (the daemon's /metrics; the ceiling servers print the same).
 */
export function callCounts(metricsText: string, service: string, method: string): CallCounts {
  let ok = 0;
  let other = 0;
  for (const line of metricsText.split("\n")) {
    const m = /^debvisor_rpc_calls_total\{([^}]*)\} ([\d.e+]+)$/.exec(line);
    if (m === null) continue;
    const labels = Object.fromEntries(
      [...(m[1] as string).matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]),
    );
    if (labels.service !== service || labels.method !== method) continue;
    if (labels.code === "OK") ok += Number(m[2]);
    else other += Number(m[2]);
  }
  return { ok, other };
}

/** The value of an unlabelled metric in Prometheus text, or undefined. */
export function metricValue(metricsText: string, name: string): number | undefined {
  const m = new RegExp(`^${name} ([\\d.e+-]+)$`, "m").exec(metricsText);
  return m === null ? undefined : Number(m[1]);
}

/** What a run must agree on before it counts. */
export interface RunCheck {
  /** Calls the load generator sent. */
  readonly sent: number;
  /** Calls the load generator saw succeed. */
  readonly clientOk: number;
  /** The server's counters before and after the run. */
  readonly before: CallCounts;
  readonly after: CallCounts;
  /** Problems the sample check found (gRPC status, response content). */
  readonly sampleProblems?: readonly string[];
}

/**
 * Why a run does not count, or nothing when it does: every call sent must
 * have succeeded at the client, and the server must have counted exactly as
 * many OK calls and no other outcome. A denied call is HTTP 200 too, so the
 * client's word alone proves nothing.
 */
export function runProblems(c: RunCheck): string[] {
  const problems = [...(c.sampleProblems ?? [])];
  const ok = c.after.ok - c.before.ok;
  const other = c.after.other - c.before.other;
  if (c.clientOk !== c.sent)
    problems.push(`${c.sent - c.clientOk} of ${c.sent} calls failed at the client`);
  if (ok !== c.sent) problems.push(`server counted ${ok} OK calls, ${c.sent} were sent`);
  if (other !== 0) problems.push(`server counted ${other} calls that did not end OK`);
  return problems;
}
