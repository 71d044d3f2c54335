// Runs every compiled *.test.js under dist/ with node's test runner.
// Listing files explicitly works the same on Node 20 and later (Node 20
// treats every .js below a test/ folder as a test file when given a folder).
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...find(p));
    else if (entry.name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const files = find("dist").sort();
if (files.length === 0) {
  console.error("no test files found under dist/: run the build first");
  process.exit(1);
}
const args = [
  "--test",
  "--test-concurrency=2",
  "--test-timeout=120000",
  ...process.argv.slice(2),
  ...files,
];
const result = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(result.status ?? 1);
