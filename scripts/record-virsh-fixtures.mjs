// Records real virsh output for the libvirt driver's replay tests into
// test/fixtures/virsh/recorded.json: `node scripts/record-virsh-fixtures.mjs`
// (needs virsh: apt-get install libvirt-clients). Each entry is one virsh
// process run against libvirt's test driver, either `test:///default` or the
// node in test/fixtures/virsh/node.xml copied to /tmp/dv-node/node.xml (the
// path the recorded argument arrays name). Commands that need state from an
// earlier one (start after stop) run as one virsh process with `;`-separated
// commands, and only the last command's output is kept.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";

const NODE_URI = "test:///tmp/dv-node/node.xml";
mkdirSync("/tmp/dv-node", { recursive: true });
copyFileSync("test/fixtures/virsh/node.xml", "/tmp/dv-node/node.xml");

const env = { ...process.env, LC_ALL: "C", LANG: "C" };
const version = spawnSync("virsh", ["--version"], { encoding: "utf8", env }).stdout.trim();

/** name -> [uri, args of the recorded command, optional commands run before it in the same process]. */
const cases = {
  "default-list": ["test:///default", ["list", "--all", "--name"]],
  "default-dominfo-test": ["test:///default", ["dominfo", "--domain", "test"]],
  "default-domstate-test": ["test:///default", ["domstate", "--domain", "test"]],
  "default-dominfo-missing": ["test:///default", ["dominfo", "--domain", "ghost-01"]],
  "default-domstate-missing": ["test:///default", ["domstate", "--domain", "ghost-01"]],
  "default-start-running": ["test:///default", ["start", "--domain", "test"]],
  "default-destroy-test": ["test:///default", ["destroy", "--domain", "test"]],
  "default-shutdown-test": ["test:///default", ["shutdown", "--domain", "test"]],
  "default-migrate-unsupported": [
    "test:///default",
    [
      "migrate",
      "--live",
      "--persistent",
      "--undefinesource",
      "--verbose",
      "--abort-on-error",
      "--domain",
      "test",
      "--desturi",
      "test:///default",
    ],
  ],
  "default-domjobinfo-unsupported": ["test:///default", ["domjobinfo", "--domain", "test"]],
  "default-domjobabort-unsupported": ["test:///default", ["domjobabort", "--domain", "test"]],
  "unreachable-list": ["test:///tmp/dv-node/missing.xml", ["list", "--all", "--name"]],
  // No libvirtd runs where the fixtures are recorded: the real "daemon down" output.
  "qemu-unreachable-list": ["qemu:///system", ["list", "--all", "--name"]],
  "node-list": [NODE_URI, ["list", "--all", "--name"]],
  "node-dominfo-web-01": [NODE_URI, ["dominfo", "--domain", "web-01"]],
  "node-dominfo-db-01": [NODE_URI, ["dominfo", "--domain", "db-01"]],
  "node-dominfo-cache-01": [NODE_URI, ["dominfo", "--domain", "cache-01"]],
  "node-dominfo-scratch-01": [NODE_URI, ["dominfo", "--domain", "scratch-01"]],
  "node-domstate-web-01": [NODE_URI, ["domstate", "--domain", "web-01"]],
  "node-domstate-db-01": [NODE_URI, ["domstate", "--domain", "db-01"]],
  "node-domstate-cache-01": [NODE_URI, ["domstate", "--domain", "cache-01"]],
  "node-start-db-01": [NODE_URI, ["start", "--domain", "db-01"]],
  "node-resume-cache-01": [NODE_URI, ["resume", "--domain", "cache-01"]],
  "node-shutdown-web-01": [NODE_URI, ["shutdown", "--domain", "web-01"]],
  "node-destroy-web-01": [NODE_URI, ["destroy", "--domain", "web-01"]],
  "node-shutdown-db-01": [NODE_URI, ["shutdown", "--domain", "db-01"]],
  "node-domstate-web-01-after-shutdown": [
    NODE_URI,
    ["domstate", "--domain", "web-01"],
    ["shutdown --domain web-01"],
  ],
  "node-domstate-db-01-after-start": [
    NODE_URI,
    ["domstate", "--domain", "db-01"],
    ["start --domain db-01"],
  ],
};

const out = { virsh: version, recordedWith: "scripts/record-virsh-fixtures.mjs", cases: {} };
for (const [name, [uri, args, before = []]] of Object.entries(cases)) {
  const argv =
    before.length === 0
      ? ["-c", uri, ...args]
      : ["-c", uri, [...before, args.join(" ")].join(" ; ")];
  // virsh 9.0's migrate sometimes hangs when the job fails at once (its watch
  // loop misses the worker's end): such a run is killed and run again.
  let r;
  for (let attempt = 0; attempt < 5; attempt++) {
    r = spawnSync("virsh", argv, { encoding: "utf8", env, timeout: 5_000 });
    if (r.status !== null) break;
  }
  let stdout = r.stdout;
  if (before.length > 0) {
    // virsh ends each command's output with a blank line: keep the last command's.
    const parts = stdout.split("\n\n");
    stdout = `${parts.at(-2) ?? ""}\n\n`;
  }
  out.cases[name] = {
    args: ["-c", uri, ...args],
    exitCode: r.status,
    stdout,
    stderr: r.stderr,
  };
}
writeFileSync("test/fixtures/virsh/recorded.json", `${JSON.stringify(out, null, 2)}\n`);
console.log(`recorded ${Object.keys(out.cases).length} virsh outputs (${version})`);
