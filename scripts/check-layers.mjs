// Fails the build when an import breaks the layering in docs/architecture.md:
// a layer may import only the layers listed for it, only through their
// index.ts, and core may not import node: modules. Tests and bin are exempt
// from the direction rule but still enter layers by their index.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve("src");
/** Which layers each layer may import. `gen` is generated protobuf code. */
const ALLOWED = {
  gen: [],
  core: ["gen"],
  pki: ["core", "gen"],
  security: ["core", "gen", "pki", "store"],
  audit: ["core", "gen"],
  store: ["core", "gen"],
  drivers: ["core", "gen"],
  cluster: ["core", "gen", "drivers", "store", "security", "audit"],
  client: ["core", "gen", "pki"],
  panel: ["core", "gen", "security", "audit", "store"],
  server: [
    "core",
    "gen",
    "pki",
    "security",
    "audit",
    "store",
    "drivers",
    "cluster",
    "client",
    "panel",
  ],
  cli: ["core", "gen", "pki", "client", "audit"],
  agent: ["core", "gen", "pki", "client", "drivers"],
  bin: ["*"],
};

function walk(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

const problems = [];
const importRe =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"|import\("([^"]+)"\)|(?:^|\n)\s*import\s+"([^"]+)"/g;
for (const file of [...walk(SRC), ...walk(resolve("test"))]) {
  const rel = relative(SRC, file);
  const inSrc = !rel.startsWith("..");
  const layer = inSrc ? rel.split("/")[0] : "test";
  if (layer === "gen") continue;
  if (inSrc && !(layer in ALLOWED)) problems.push(`${rel}: folder "${layer}" is not a known layer`);
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(importRe)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (layer === "core" && !file.endsWith(".test.ts") && spec.startsWith("node:"))
      problems.push(`${rel}: core may not import ${spec}`);
    if (!spec.startsWith(".")) continue;
    const target = relative(SRC, resolve(dirname(file), spec));
    if (target.startsWith("..")) continue;
    const [targetLayer, ...rest] = target.split("/");
    if (targetLayer === layer) continue;
    if (targetLayer !== "gen" && rest.join("/") !== "index.js") {
      problems.push(
        `${relative(".", file)}: imports ${spec}; other layers are entered only through their index.js`,
      );
    }
    const allowed = ALLOWED[layer] ?? ["*"];
    if (!allowed.includes("*") && !allowed.includes(targetLayer)) {
      problems.push(`${relative(".", file)}: layer "${layer}" may not depend on "${targetLayer}"`);
    }
  }
}
if (problems.length > 0) {
  console.error(`layer check failed:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log("layer check: ok");
