import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** True when the suite runs in CI (`CI=true`): there every tool the tests use must be installed. */
export const IN_CI = process.env.CI === "true";

/** The executable `name` found on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** True when `file args...` runs and exits 0 (a tool that is present and works). */
export function runsOk(file: string, args: readonly string[]): boolean {
  return spawnSync(file, args, { stdio: "ignore", timeout: 20_000 }).status === 0;
}

/**
 * Decides what a test does when a system tool is missing. Present: false
 * (run). Missing under `CI=true`: throws, so the run fails instead of
 * quietly testing less (`.ci/run` installs every tool). Missing on a
 * developer's machine: prints a loud notice and returns the skip message,
 * for `describe(name, { skip: missingTool(...) })` or `t.skip(...)`.
 */
export function missingTool(tool: string, present: boolean, install: string): false | string {
  if (present) return false;
  const message = `${tool} is not installed (${install})`;
  if (IN_CI) throw new Error(`${message}: CI=true requires it; .ci/run installs it`);
  console.log(`!!! ${message}: its tests are SKIPPED.`);
  return message;
}

/**
 * For a test that needs root (a tmpfs mount, `chattr`): true when it runs
 * as root; otherwise skips `t` and answers false, and under `CI=true`
 * throws, as for a missing tool. `why` says what root is for.
 */
export function runsAsRoot(t: { skip(message?: string): void }, why: string): boolean {
  const skip = missingTool(`root (${why})`, process.getuid?.() === 0, "run the tests as root");
  if (skip === false) return true;
  t.skip(skip);
  return false;
}
