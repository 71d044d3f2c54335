// The benchmark suite: every scenario of bench/README.md against the built
// daemon on loopback, variants alternated over rounds, medians reported.
// Prints a Markdown table and writes bench/results/<date>.json.
//
//   npm run bench                           (build, then everything: < 15 min on 2 cores)
//   npm run bench -- --only reads,auth      (some scenarios)
//   npm run bench -- --profile writes       (one scenario, servers under node --cpu-prof)
//   node dist/bench/run-bench.js --rounds 1 --scale 0.2   (a quick look while developing)
//   npm run bench -- --only agents --agents 1000,10000    (agent streams; needs etcd, not h2load)
//   npm run bench -- --only agents --full-reports         (every heartbeat lists its VMs, as older agents do)
//   npm run bench -- --only agents --skip-ceilings        (the daemon alone, not its transport ceilings)
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createBenchFixture } from "./bench-fixture.js";
import { renderReport, type ScenarioResult } from "./bench-report.js";
import { haveH2load } from "./bench-support.js";
import { type CpuProfile, hotFunctions } from "./cpu-profile.js";
import type { Scenario, ScenarioContext } from "./scenario.js";
import { agentsScenario } from "./scenario-agents.js";
import { authScenario } from "./scenario-auth.js";
import { handshakeScenario } from "./scenario-handshake.js";
import { latencyScenario } from "./scenario-latency.js";
import { readsScenario } from "./scenario-reads.js";
import { writesScenario } from "./scenario-writes.js";

/** In this order: latency uses the maximum the reads scenario measured. */
const SCENARIOS: readonly Scenario[] = [
  readsScenario,
  latencyScenario,
  authScenario,
  handshakeScenario,
  writesScenario,
  agentsScenario,
];

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    scale: { type: "string", default: "1" },
    only: { type: "string" },
    profile: { type: "string" },
    out: { type: "string", default: "bench/results" },
    agents: { type: "string", default: "" },
    "full-reports": { type: "boolean", default: false },
    "skip-ceilings": { type: "boolean", default: false },
  },
});
const started = performance.now();
const ids = SCENARIOS.map((s) => s.id);
const wanted = values.profile ?? values.only;
const selected =
  wanted === undefined ? [...SCENARIOS] : SCENARIOS.filter((s) => wanted.split(",").includes(s.id));
const unknown = (wanted ?? "").split(",").filter((w) => w !== "" && !ids.includes(w));
if (unknown.length > 0 || selected.length === 0 || (values.profile ?? "").includes(",")) {
  console.error(
    `unknown scenario ${unknown.join(", ")}: use one of ${ids.join(", ")} (--profile takes one)`,
  );
  process.exit(2);
}
const rounds = Math.min(20, Math.max(1, Math.floor(Number(values.rounds)) || 3));
const scale = Math.min(10, Math.max(0.01, Number(values.scale) || 1));
const agents = (values.agents as string)
  .split(",")
  .filter((a) => a !== "")
  .map((a) => Math.floor(Number(a)));
if (agents.some((n) => !(n >= 1 && n <= 10_000))) {
  console.error("--agents takes stream counts from 1 to 10000, e.g. --agents 1000,10000");
  process.exit(2);
}
const needsH2load = selected.some((s) => s.id !== "agents");
if (needsH2load && !(await haveH2load())) {
  console.error("h2load is not installed: sudo apt-get install nghttp2-client");
  process.exit(2);
}

const stamp = new Date().toISOString().slice(0, 19).replace(/:/g, "");
const out = resolve(values.out as string);
const profileDir =
  values.profile === undefined ? undefined : join(out, "profiles", `${values.profile}-${stamp}`);
const scratch = mkdtempSync(join(tmpdir(), "dv-bench-"));
const profiles: string[] = [];
const results: ScenarioResult[] = [];
const failures: string[] = [];
const log = (line: string) => console.error(line);
try {
  log(`setting up in ${scratch} (CA, ECDSA and RSA-4096 certificates, stores)`);
  const fixture = await createBenchFixture(join(scratch, "fixture"));
  const earlier = new Map<string, ScenarioResult>();
  for (const scenario of selected) {
    const t0 = performance.now();
    log(`${scenario.id}: ${scenario.about}`);
    const ctx: ScenarioContext = {
      fixture,
      rounds,
      scale,
      profileDir,
      scratch,
      earlier,
      log,
      profileWritten: (file) => profiles.push(file),
      agents,
      fullReports: values["full-reports"] === true,
      skipCeilings: values["skip-ceilings"] === true,
    };
    try {
      const r = await scenario.run(ctx);
      results.push(r);
      earlier.set(r.id, r);
    } catch (err) {
      failures.push(`${scenario.id}: ${(err as Error).stack ?? err}`);
      log(`${scenario.id} FAILED: ${(err as Error).stack ?? err}`);
    }
    log(`${scenario.id}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const wallSeconds = (performance.now() - started) / 1000;
const h2loadVersion = needsH2load
  ? execFileSync("h2load", ["--version"], { timeout: 5000 }).toString().trim()
  : "h2load not used";
const machine = `${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? "unknown"}), Node ${process.versions.node}, ${h2loadVersion}`;
const report = renderReport(
  results,
  `DebVisor RPC benchmark ${stamp}: medians of ${rounds} alternating rounds${scale === 1 ? "" : `, call counts x${scale}`}${profileDir === undefined ? "" : ", servers under --cpu-prof (numbers not comparable)"}\n${machine}`,
);
console.log(
  `${report}\n\nWall time: ${(wallSeconds / 60).toFixed(1)} min (this process, after the build)`,
);
const rejected = results.flatMap((r) => r.rows).filter((r) => r.rejected > 0 || r.runs === 0);
if (profileDir !== undefined) {
  console.log("\nCPU profiles (open in Chrome DevTools > Performance, or speedscope.app):");
  for (const p of profiles) {
    console.log(`  ${p}\n    most self time (share of the busy samples):`);
    const profile = JSON.parse(readFileSync(p, "utf8")) as CpuProfile;
    for (const h of hotFunctions(profile, 8))
      console.log(`      ${h.selfPercent.toFixed(1).padStart(5)}%  ${h.name}  ${h.where}`);
  }
} else {
  mkdirSync(out, { recursive: true });
  const file = join(out, `${stamp}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        benchmark: "debvisor-rpc suite",
        date: new Date().toISOString(),
        machine,
        rounds,
        scale,
        wallSeconds: Math.round(wallSeconds),
        scenarios: results,
        failures,
        report,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nwritten: ${file}`);
}
if (failures.length > 0 || rejected.length > 0) {
  console.error(
    `not every run counts: ${failures.length} scenario(s) failed, ${rejected.length} row(s) with rejected runs`,
  );
  process.exitCode = 1;
}
