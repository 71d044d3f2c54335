// The npm registry reachable here serves only linux-glibc builds of packages
// that ship one optional package per platform (@biomejs/cli-*, @bufbuild/buf-*),
// so `npm install` cannot record the other platforms in package-lock.json,
// and `npm ci` then refuses the lockfile as out of sync. This adds the missing
// entries (version, os, cpu, libc; optional) so `npm ci` works everywhere:
// npm skips them on platforms they do not match and fetches them by version
// on those they do. Run it after any `npm install` that rewrites the lock.
import { readFileSync, writeFileSync } from "node:fs";

const path = "package-lock.json";
const lock = JSON.parse(readFileSync(path, "utf8"));
const packages = lock.packages;
const OS = ["android", "darwin", "linux", "win32", "freebsd"];
const CPU = { arm64: "arm64", aarch64: "arm64", x64: "x64", armv7: "arm" };
let added = 0;
for (const [parentPath, meta] of Object.entries({ ...packages })) {
  for (const [name, version] of Object.entries(meta.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (packages[key] !== undefined) continue;
    const parts = name.split("/").pop().split("-");
    const os = parts.find((p) => OS.includes(p));
    const cpu = parts.map((p) => CPU[p]).find((c) => c !== undefined);
    if (os === undefined || cpu === undefined) {
      console.error(`${parentPath}: cannot tell the platform of ${name}; left out`);
      continue;
    }
    packages[key] = {
      version,
      cpu: [cpu],
      ...(parts.includes("musl") ? { libc: ["musl"] } : {}),
      ...(meta.dev ? { dev: true } : {}),
      optional: true,
      os: [os],
    };
    added++;
  }
}
lock.packages = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a.localeCompare(b))),
);
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platforms: added ${added} platform entries`);
