import { unwatchFile, watchFile } from "node:fs";
import { join } from "node:path";
import { AgentError } from "../client/index.js";
import { readFileIfPresent, writeFileDurably } from "../drivers/index.js";

/**
 * Faults injected into a running agent, for demonstrations and tests: kept
 * in `faults.json` in the agent's directory, written by `debvisor-agent
 * fault` and watched by the running agent, which applies a change within a
 * fraction of a second. (Killing and pausing are signals to the process,
 * whose id is in `agent.pid`.)
 */
export interface AgentFaults {
  /** The stream to the control plane is cut and not re-opened until healed. */
  readonly partitioned: boolean;
  /** Migrations from this node fail once they reach this percent (simulated hypervisor). */
  readonly failMigrationAt?: number;
  /** Migrations from this node stop progressing at this percent until lifted or cancelled (simulated hypervisor). */
  readonly holdMigrationAt?: number;
  /** Added to every timestamp the agent reports (heartbeats, Hello, results). */
  readonly clockOffsetMs: number;
}

/** No fault. */
export const NO_FAULTS: AgentFaults = Object.freeze({ partitioned: false, clockOffsetMs: 0 });

/** The file of an agent directory's faults. */
export const faultsFile = (dir: string) => join(dir, "faults.json");

/** The faults in force for `dir` (none when there is no file or it cannot be read). */
export function readFaults(dir: string): AgentFaults {
  try {
    const text = readFileIfPresent(faultsFile(dir));
    if (text === undefined) return NO_FAULTS;
    const data = JSON.parse(text) as Partial<AgentFaults>;
    return Object.freeze({
      partitioned: data.partitioned === true,
      failMigrationAt: typeof data.failMigrationAt === "number" ? data.failMigrationAt : undefined,
      holdMigrationAt: typeof data.holdMigrationAt === "number" ? data.holdMigrationAt : undefined,
      clockOffsetMs: typeof data.clockOffsetMs === "number" ? data.clockOffsetMs : 0,
    });
  } catch {
    return NO_FAULTS;
  }
}

/**
 * Applies one `debvisor-agent fault` command to `dir`'s faults and returns
 * them: `partition`, `heal`, `fail-migration-at PERCENT` (0 to 100),
 * `hold-migration-at PERCENT` (0 to 100; `clear` lifts it),
 * `clock-offset MS` (within a day either way), `clear`; and `revive`,
 * which asks the supervisor of a dead agent (dev mode's daemon) to start it
 * again: the marker file `revive` in `dir`. Bad input is an AgentError and
 * changes nothing.
 */
export function applyFaultCommand(dir: string, command: string, arg?: string): AgentFaults {
  const now = readFaults(dir);
  if (command === "revive") {
    writeFileDurably(join(dir, "revive"), "");
    return now;
  }
  const integer = (what: string, min: number, max: number): number => {
    const n = Number(arg);
    if (arg === undefined || arg.trim() === "" || !Number.isInteger(n) || n < min || n > max)
      throw new AgentError(`${command}: ${what} must be a whole number from ${min} to ${max}`);
    return n;
  };
  let next: AgentFaults;
  switch (command) {
    case "partition":
      next = { ...now, partitioned: true };
      break;
    case "heal":
      next = { ...now, partitioned: false };
      break;
    case "fail-migration-at":
      next = { ...now, failMigrationAt: integer("PERCENT", 0, 100) };
      break;
    case "hold-migration-at":
      next = { ...now, holdMigrationAt: integer("PERCENT", 0, 100) };
      break;
    case "clock-offset":
      next = { ...now, clockOffsetMs: integer("MS", -86_400_000, 86_400_000) };
      break;
    case "clear":
      next = NO_FAULTS;
      break;
    default:
      throw new AgentError(
        `unknown fault ${command}: partition, heal, fail-migration-at PERCENT, hold-migration-at PERCENT, clock-offset MS, clear or revive`,
      );
  }
  writeFileDurably(faultsFile(dir), `${JSON.stringify(next)}\n`);
  return next;
}

/** A short description of faults, for the command's output and the agent's log. */
export function describeFaults(f: AgentFaults): string {
  const parts = [
    f.partitioned ? "partitioned" : "",
    f.failMigrationAt === undefined ? "" : `migrations fail at ${f.failMigrationAt} %`,
    f.holdMigrationAt === undefined ? "" : `migrations hold at ${f.holdMigrationAt} %`,
    f.clockOffsetMs === 0 ? "" : `clock offset ${f.clockOffsetMs} ms`,
  ].filter((p) => p !== "");
  return parts.length === 0 ? "no faults" : parts.join(", ");
}

/** Follows `dir`'s faults file (polled every 100 ms); `onChange` hears each change. */
export function watchFaults(
  dir: string,
  onChange: (faults: AgentFaults) => void,
): { current(): AgentFaults; close(): void } {
  let current = readFaults(dir);
  const file = faultsFile(dir);
  const listener = () => {
    const next = readFaults(dir);
    if (JSON.stringify(next) === JSON.stringify(current)) return;
    current = next;
    onChange(next);
  };
  watchFile(file, { interval: 100, persistent: false }, listener);
  return { current: () => current, close: () => unwatchFile(file, listener) };
}
