import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { enroll } from "../../src/client/index.js";
import { bundledBin } from "./bundled-bin.js";
import { runProcess } from "./daemon-process.js";

/** debvisor-agent as it ships (its bundle). */
export const AGENT_BIN = bundledBin("debvisor-agent");

/** A `debvisor-agent run` child process and its JSON log lines. */
export interface AgentProcess {
  readonly proc: ChildProcess;
  readonly logs: Record<string, unknown>[];
  waitLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** Starts `debvisor-agent run ARGS...` with its JSON log collected. */
export function startAgent(args: readonly string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  // --exit-with-stdin: a test process that dies (a file's timeout) takes its agents with it.
  const proc = spawn(process.execPath, [AGENT_BIN, "run", "--exit-with-stdin", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const logs: Record<string, unknown>[] = [];
  let buffered = "";
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  proc.stdout?.on("data", (d: Buffer) => {
    buffered += d.toString();
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  return {
    proc,
    logs,
    async waitLog(msg, timeoutMs = 15_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const hit = logs.find((l) => l.msg === msg);
        if (hit !== undefined) return hit;
        if (Date.now() > until || proc.exitCode !== null)
          throw new Error(`agent: no "${msg}" log line; stderr:\n${stderr}`);
        await sleep(50);
      }
    },
  };
}

type Hvctl = (
  ...args: string[]
) => Promise<{ code: number | null; stdout: string; stderr: string }>;

/** A one-time token for `node` from `hvctl token create`, and the CA fingerprint to pin. */
async function enrollmentToken(
  hvctl: Hvctl,
  node: string,
): Promise<{ token: string; caFingerprint: string }> {
  const t = await hvctl("-o", "json", "token", "create", node);
  assert.equal(t.code, 0, t.stderr);
  return JSON.parse(t.stdout) as { token: string; caFingerprint: string };
}

/**
 * Runs `debvisor-agent enroll` of `node` into `agentDir` against the daemon
 * at `server`, with a one-time token from `hvctl token create` (run by
 * `hvctl`); resolves with how it ended.
 */
export async function runEnroll(
  hvctl: Hvctl,
  server: string,
  agentDir: string,
  node: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { token, caFingerprint } = await enrollmentToken(hvctl, node);
  return runProcess(
    process.execPath,
    [AGENT_BIN, "enroll", "--server", server, "--ca-fingerprint", caFingerprint, "--dir", agentDir],
    { env: { DEBVISOR_ENROLL_TOKEN: token } },
  );
}

/**
 * Enrolls `node` into `dir`/`node` as `debvisor-agent enroll` does (the same
 * `enroll`, in this process: a test's set-up, where the program itself is not
 * what is tested; {@link runEnroll} runs the program); resolves with the
 * agent's directory.
 */
export async function enrollAgent(
  hvctl: Hvctl,
  server: string,
  dir: string,
  node: string,
): Promise<string> {
  const agentDir = join(dir, node);
  await enroll({ server, ...(await enrollmentToken(hvctl, node)), dir: agentDir });
  return agentDir;
}
