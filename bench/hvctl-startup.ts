/*
 * Start-up time of `hvctl node list` against a dev daemon: the median
 * wall time of several runs of the built binary as an operator runs it
 * (a new node process each time, connection and call included), and the
 * median CPU time (user + system, from /usr/bin/time), which a busy
 * machine inflates less than the wall time.
 *
 *   npm run build && node dist/bench/hvctl-startup.js [--runs 15]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { HVCTL_BIN, startDevDaemon } from "../test/helpers/daemon-process.js";
import { median } from "./bench-support.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "15" } } });
/** GNU time: wall and CPU time of a child (the runs are skipped without it). */
const TIME = "/usr/bin/time";
const runs = Math.min(100, Math.max(3, Number(values.runs)));
const dir = mkdtempSync(join(tmpdir(), "hvctl-startup-"));
const daemon = await startDevDaemon(dir);
try {
  const times: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const start = performance.now();
    const r = spawnSync(
      TIME,
      [
        "-f",
        "cpu %U %S",
        process.execPath,
        HVCTL_BIN,
        "--config",
        join(dir, "hvctl.yaml"),
        "node",
        "list",
      ],
      { encoding: "utf8", timeout: 10_000 },
    );
    const ms = performance.now() - start;
    if (r.status !== 0) throw new Error(`hvctl node list failed: ${r.stderr}`);
    if (i === 0) continue; // the first run warms the file cache
    times.push(ms);
    const m = /cpu ([\d.]+) ([\d.]+)/.exec(r.stderr);
    if (m !== null) cpu.push((Number(m[1]) + Number(m[2])) * 1000);
  }
  times.sort((a, b) => a - b);
  console.log(
    `hvctl node list: median ${median(times).toFixed(0)} ms wall, ${median(cpu).toFixed(0)} ms cpu over ${runs} runs (wall min ${times[0]?.toFixed(0)}, max ${times.at(-1)?.toFixed(0)}); load average ${loadavg()[0]?.toFixed(1)} on ${cpus().length} cpus`,
  );
} finally {
  daemon.kill();
  await daemon.exited;
  rmSync(dir, { recursive: true, force: true });
}
