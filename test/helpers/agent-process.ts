import { type ChildProcess, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { AGENT_BIN } from "./agent-enrollment.js";

/** A `debvisor-agent run` child process and its JSON log lines. */
export interface AgentProcess {
  readonly proc: ChildProcess;
  readonly logs: Record<string, unknown>[];
  waitLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** Starts `debvisor-agent run` with `args`, collecting its JSON log lines. */
export function startAgent(args: readonly string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const proc = spawn(process.execPath, [AGENT_BIN, "run", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
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
