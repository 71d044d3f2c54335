// Runs every compiled *.test.js under dist/, bundled, with node's test runner.
// Listing files explicitly works the same on Node 20 and later (Node 20
// treats every .js below a test/ folder as a test file when given a folder).
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundledPath, bundleTests, compiledTestFiles } from "./bundle-tests.mjs";

// The slowest files (20-90 s each in runs of 6 December 2026, mostly
// waiting on timers, leases, etcd members and child processes) start
// first, so the run does not end with one of them alone on a worker while
// the others sit idle. A name missing here only loses that ordering.
const SLOW_FIRST = [
  "chaos",
  "etcd-keepalive",
  "fencing-node",
  "agent",
  "authorization-table",
  "ha-outage",
  "audit-kill9",
  "liveness-skew",
  "hvctl-storage",
  "hvctl-cluster",
  "events-daemon",
  "etcd-watch-silence",
  "etcd-watch-slow-member",
  "agent-migration-crash",
  "lifecycle-generation",
  "runner-registry",
  "node-hypervisor",
  "enrollment",
  "agent-cluster",
  "file-set-lock",
  "vm-lost-node",
  "migration-source-lost",
  "panel-e2e",
  "dir-lock",
  "heartbeat-store-stall",
  "agent-replication",
];
const rank = (file) => {
  const at = SLOW_FIRST.indexOf(file.replace(/^.*\//, "").replace(/\.test\.js$/, ""));
  return at < 0 ? SLOW_FIRST.length : at;
};
// The tests run the programs as they ship, bundled (scripts/bundle-bins.mjs); a build by
// tsc alone leaves the bundles older than the code beside them: made again here, once.
const stale = ["debvisor-rpcd", "hvctl", "debvisor-agent"].some((name) => {
  const bundle = `dist/src/bin/${name}.js`;
  return (
    !existsSync(bundle) ||
    statSync(`dist/src/bin/${name}-main.js`).mtimeMs > statSync(bundle).mtimeMs
  );
});
if (
  stale &&
  spawnSync(process.execPath, ["scripts/bundle-bins.mjs"], { stdio: "inherit" }).status !== 0
) {
  console.error("bundling the programs failed");
  process.exit(1);
}
const compiled = compiledTestFiles().sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
if (compiled.length === 0) {
  console.error("no test files found under dist/: run the build first");
  process.exit(1);
}
// The test files run bundled (scripts/bundle-tests.mjs), made again on every
// run from what tsc wrote; DV_TESTS_UNBUNDLED=1 runs tsc's files as they are.
const unbundled = process.env.DV_TESTS_UNBUNDLED === "1";
if (!unbundled) await bundleTests(compiled);
const files = unbundled ? compiled : compiled.map(bundledPath);
const args = [
  "--test",
  // Four files at once on two cores: most of a file's time is spent waiting
  // (timers, leases, child processes, etcd). On the 2-core machine (6 December
  // 2026) the suite took 544 s at four (166% CPU) against 646 s at three; at
  // six, later that day, a fencing test's timing failed under the load.
  "--test-concurrency=4",
  // Node 20 applies this to each file as a whole as well as to each test. The
  // slowest files take 30-75 s here; under a loaded runner (load 16 beside
  // other work) five of them passed every test and still went past 120 s.
  // Every test bounds its own waits, so this only catches a hang.
  "--test-timeout=300000",
  ...process.argv.slice(2),
  ...files,
];
// hvctl keeps the revoked server certificates of each cluster it talks to in
// $XDG_STATE_HOME: the tests' hvctl runs (a new dev cluster each, with its own
// CA) keep theirs here for the run, not in the home directory of whoever runs it.
const state = mkdtempSync(join(tmpdir(), "dv-test-state-"));
const result = spawnSync(process.execPath, args, {
  stdio: "inherit",
  env: { ...process.env, XDG_STATE_HOME: state },
});
rmSync(state, { recursive: true, force: true });
process.exit(result.status ?? 1);
