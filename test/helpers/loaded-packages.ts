import { execFileSync } from "node:child_process";

/**
 * The files of the package `name` (in node_modules) that importing the
 * module at `entry` loads, comma-separated: "" when it is left for later.
 * Asked of a fresh process, since the test's own may have loaded it.
 */
export function packageFilesLoadedBy(entry: URL, name: string): string {
  const script = `
    await import(${JSON.stringify(entry.href)});
    const { createRequire } = await import("node:module");
    const cache = createRequire(${JSON.stringify(entry.href)}).cache;
    process.stdout.write(Object.keys(cache).filter((k) => k.includes(${JSON.stringify(`/node_modules/${name}/`)})).join(","));
  `;
  return execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 30_000,
  });
}
