import { mkdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError, DirectoryInUseError, lockDirectory } from "../client/index.js";

/** The lock an agent directory holds while `run` or `enroll` uses it. */
export const AGENT_LOCK_FILE = ".debvisor-agent.lock";

/**
 * Takes the agent directory's lock ({@link lockDirectory}) before anything
 * in it is read or written, and answers its release: two agents on one
 * directory would be one node twice (two streams with one identity, two
 * journals over one hypervisor, agent.pid naming either). Another live
 * agent's lock throws an AgentError naming its pid.
 */
export function lockAgentDirectory(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    return lockDirectory(dir, AGENT_LOCK_FILE);
  } catch (err) {
    throw inUse(err, dir);
  }
}

/** How long `run` waits for another agent on its directory to exit before it gives up. */
export const AGENT_LOCK_WAIT_MS = 5000;

/**
 * As {@link lockAgentDirectory}, but waits up to `waitMs` for a live holder
 * to exit: an agent still stopping as the next one starts (dev mode's
 * agents, told to stop when their daemon went away, while the restarted
 * daemon starts new ones; a unit restarted by hand) is not a second agent.
 */
export async function lockAgentDirectoryWaiting(
  dir: string,
  waitMs = AGENT_LOCK_WAIT_MS,
): Promise<() => void> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const end = Date.now() + waitMs;
  for (;;) {
    try {
      return lockDirectory(dir, AGENT_LOCK_FILE);
    } catch (err) {
      if (!(err instanceof DirectoryInUseError) || Date.now() >= end) throw inUse(err, dir);
    }
    await sleep(100);
  }
}

function inUse(err: unknown, dir: string): unknown {
  return err instanceof DirectoryInUseError
    ? new AgentError(`another debvisor-agent (${err.holder}) runs on ${dir}`)
    : err;
}
