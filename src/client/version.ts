import { readFileSync } from "node:fs";

let cached: string | undefined;

/** The version of this package (the same for hvctl and debvisor-rpcd). */
export function packageVersion(): string {
  if (cached === undefined) {
    // dist/src/client/version.js -> package.json at the package root.
    const url = new URL("../../../package.json", import.meta.url);
    cached = (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  }
  return cached;
}
