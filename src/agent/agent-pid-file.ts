import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readFileIfPresent } from "../drivers/index.js";

/**
 * Writes `dir`/agent.pid with this process's id, so an operator or a test
 * can signal this very process (`kill -STOP $(cat DIR/agent.pid)`), and
 * returns what removes it: only while it still names this process (a later
 * agent's file is left), so a stale file never points a `kill` at whatever
 * process reuses the id.
 */
export function writeAgentPidFile(dir: string): () => void {
  const file = join(dir, "agent.pid");
  const mine = `${process.pid}\n`;
  writeFileSync(file, mine, { mode: 0o644 });
  return () => {
    if (readFileIfPresent(file) === mine) rmSync(file, { force: true });
  };
}
