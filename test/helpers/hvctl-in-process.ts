import { runCli } from "../../src/cli/index.js";

/** What one hvctl run printed and how it ended. */
export interface HvctlRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs hvctl in this process (no child process: much cheaper where the
 * process boundary is not what a test is about), with `--config` set and
 * an environment of its own (not the test runner's DEBVISOR_* variables).
 */
export function hvctlInProcess(config: string, ...args: string[]): Promise<HvctlRun> {
  let stdout = "";
  let stderr = "";
  return runCli(["--config", config, ...args], {
    out: (t) => {
      stdout += t;
    },
    err: (t) => {
      stderr += t;
    },
    env: { NO_COLOR: "1" },
  }).then((code) => ({ code, stdout, stderr }));
}
