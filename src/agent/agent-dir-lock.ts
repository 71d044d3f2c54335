import { mkdirSync } from "node:fs";
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
    if (err instanceof DirectoryInUseError)
      throw new AgentError(`another debvisor-agent (pid ${err.pid}) runs on ${dir}`);
    throw err;
  }
}
