/*
 * Start-up of `debvisor-rpcd --dev` (SQLite, no agents) on a data directory
 * it has started on before, as after a restart: the median wall time from
 * spawn to its "serving" line, and its RSS a second after (from
 * /proc/PID/status). Each run is a new process; the first start of each
 * directory (CA and store creation) is not counted.
 *
 *   npm run build && node dist/bench/daemon-startup.js [--runs 9]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { type DaemonProcess, startDevDaemon } from "../test/helpers/daemon-process.js";
import { median } from "./bench-support.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "9" } } });
const runs = Math.min(50, Math.max(3, Number(values.runs)));

/** The process's resident set in MiB, from /proc. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m === null ? Number.NaN : Number(m[1]) / 1024;
}

async function stop(d: DaemonProcess): Promise<void> {
  d.kill();
  await d.exited;
}

const dir = mkdtempSync(join(tmpdir(), "rpcd-startup-"));
try {
  await stop(await startDevDaemon(dir));
  const wall: number[] = [];
  const rss: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const start = performance.now();
    const d = await startDevDaemon(dir);
    const ms = performance.now() - start;
    await sleep(1000);
    const mib = rssMiB(d.proc.pid as number);
    await stop(d);
    if (i === 0) continue; // the first run warms the file cache
    wall.push(ms);
    rss.push(mib);
  }
  console.log(
    `debvisor-rpcd --dev (SQLite) start: median ${median(wall).toFixed(0)} ms to serving, RSS ${median(rss).toFixed(1)} MiB after 1 s, over ${runs} runs (wall ${Math.min(...wall).toFixed(0)} to ${Math.max(...wall).toFixed(0)} ms); load average ${loadavg()[0]?.toFixed(1)} on ${cpus().length} cpus`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
