import { statSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The path of a program as it ships: its bundle, dist/src/bin/<name>.js
 * (scripts/bundle-bins.mjs). Refused when tsc has written the program's
 * entry since the bundle was made (tsc rewrites every file it emits): a test
 * would run the old program beside the new modules it imports itself.
 */
export function bundledBin(name: "debvisor-rpcd" | "hvctl" | "debvisor-agent"): string {
  const bundle = fileURLToPath(new URL(`../../src/bin/${name}.js`, import.meta.url));
  const entry = fileURLToPath(new URL(`../../src/bin/${name}-main.js`, import.meta.url));
  if (statSync(entry).mtimeMs > statSync(bundle).mtimeMs)
    throw new Error(
      `${bundle} is older than tsc's output: run node scripts/bundle-bins.mjs (npm run build does)`,
    );
  return bundle;
}
