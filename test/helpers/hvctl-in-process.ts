import { runCli } from "../../src/cli/index.js";

/** What one hvctl run printed and how it ended. */
export interface HvctlRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment of an in-process run: no colour, and the test run's hvctl state (scripts/run-tests.mjs). */
const OWN_ENV: NodeJS.ProcessEnv = {
  NO_COLOR: "1",
  ...(process.env.XDG_STATE_HOME === undefined
    ? {}
    : { XDG_STATE_HOME: process.env.XDG_STATE_HOME }),
};

/**
 * Runs hvctl in this process (no child process: much cheaper where the
 * process boundary is not what a test is about) with exactly `args` and an
 * environment of its own, `env` (not the test runner's DEBVISOR_* variables;
 * by default its XDG_STATE_HOME, where hvctl keeps its lists of revoked
 * server certificates). Not for what needs a process: signals, pipes, a
 * terminal, start-up, or a default configuration found through HOME.
 */
export function runHvctlInProcess(
  args: readonly string[],
  env: NodeJS.ProcessEnv = OWN_ENV,
): Promise<HvctlRun> {
  let stdout = "";
  let stderr = "";
  return runCli(args, {
    out: (t) => {
      stdout += t;
    },
    err: (t) => {
      stderr += t;
    },
    env,
  }).then((code) => ({ code, stdout, stderr }));
}

/** {@link runHvctlInProcess} with `--config` set. */
export function hvctlInProcess(config: string, ...args: string[]): Promise<HvctlRun> {
  return runHvctlInProcess(["--config", config, ...args]);
}
