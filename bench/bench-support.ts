// Shared by the benchmarks: running h2load, reading its results, medians.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";

/** What one h2load run measured. */
export interface H2loadResult {
  readonly reqPerSec: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
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
    p.once("close", (code) => {
      if (code !== 0) return reject(new Error(`h2load exited ${code}:\n${out}`));
      const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
      const req = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(
        out,
      );
      if (rps === null || req === null)
        return reject(new Error(`cannot parse h2load output:\n${out}`));
      const lat = readFileSync(logFile, "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => Number(l.split("\t")[2]) / 1000)
        .sort((a, b) => a - b);
      const pct = (q: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * q))] ?? 0;
      resolve({
        reqPerSec: Number(rps[1]),
        succeeded: Number(req[1]),
        failed: Number(req[2]),
        p50Ms: pct(0.5),
        p99Ms: pct(0.99),
      });
    });
  });
}

/** The median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** True when h2load is installed. */
export function haveH2load(): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn("h2load", ["--version"], { stdio: "ignore" });
    p.once("error", () => resolve(false));
    p.once("close", (code) => resolve(code === 0));
  });
}
