// Where the test suite's CPU goes: runs scripts/run-tests.mjs (arguments
// passed on) with scripts/suite-cpu-hook.cjs preloaded into every node
// process, then prints CPU seconds by what each process ran (a test file, or
// a bin and its command: `debvisor-agent status`, `hvctl`, ...). Node only:
// etcd, browsers and virsh are not counted, nor processes killed with -9.
// Usage: npm run test:cpu (or, built: node scripts/suite-cpu.mjs [run-tests
// arguments]); node scripts/suite-cpu.mjs --from FILE prints a kept log again.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const from = process.argv[2] === "--from" ? process.argv[3] : undefined;
const log = from ?? join(mkdtempSync(join(tmpdir(), "dv-suite-cpu-")), "processes.tsv");
const hook = new URL("./suite-cpu-hook.cjs", import.meta.url).pathname;
const t0 = Date.now();
const run =
  from === undefined
    ? spawnSync(process.execPath, ["scripts/run-tests.mjs", ...process.argv.slice(2)], {
        stdio: ["ignore", "ignore", "inherit"],
        env: {
          ...process.env,
          DV_SUITE_CPU_LOG: log,
          NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${hook}`.trim(),
        },
      })
    : { status: "(not run)" };
const wall = (Date.now() - t0) / 1000;
/** What a process ran, as grouped: test files together, a bin by its command, a daemon serving as one. */
function groupOf(script, command) {
  if (script.endsWith(".test.js")) return "test files (each in its own process)";
  if (script === "-" || script === "") return "node -e and stdin scripts";
  if (!script.startsWith("src/bin/")) return script;
  const bin = script.slice(8, -3);
  if (bin === "hvctl") return bin;
  if (bin === "debvisor-rpcd" && (command === "" || command.startsWith("/")))
    return `${bin} (serving)`;
  return `${bin} ${command}`;
}
const groups = new Map();
let total = 0;
for (const line of readFileSync(log, "utf8").split("\n")) {
  const [cpu, , script, command] = line.split("\t");
  if (script === undefined) continue;
  const key = groupOf(script, command ?? "");
  const g = groups.get(key) ?? { cpu: 0, n: 0 };
  g.cpu += Number(cpu);
  g.n += 1;
  groups.set(key, g);
  total += Number(cpu);
}
console.log(
  `${from === undefined ? `suite: exit ${run.status}, ${wall.toFixed(0)} s wall` : "suite not run"}, ${total.toFixed(0)} CPU s in node processes that exited (${log})`,
);
for (const [key, g] of [...groups].sort((a, b) => b[1].cpu - a[1].cpu).slice(0, 15))
  console.log(
    `${g.cpu.toFixed(1).padStart(8)} s  ${String(g.n).padStart(5)} processes  ${(g.cpu / g.n).toFixed(2)} s each  ${key}`,
  );
