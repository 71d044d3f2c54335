import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";

/**
 * Whether a process with this pid exists, still runs, and started at `start`
 * (field 22 of /proc/PID/stat, when /proc tells): a pid reused by a process
 * started later is not the one that wrote `start`, and a zombie (exited, its
 * parent not waiting for it: a container's pid 1 that reaps no orphans) keeps
 * its pid and start time but runs no more. Only meaningful for a pid of this
 * host's process space ({@link processSpace}).
 */
export function processAlive(pid: number, start: string): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const fields = statFields(pid);
  if (fields?.[0] === "Z" || fields?.[0] === "X") return false;
  const now = fields?.[19];
  return now === undefined || start === "?" || now === start;
}

/** Field 22 of /proc/PID/stat: the start time in clock ticks since boot. */
export function processStartTime(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

/** The fields of /proc/PID/stat from the third (the state) on; undefined if it cannot be read. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

let space: string | undefined;
/**
 * Names the pids this process sees: the host, its boot, and the pid
 * namespace (a container's pids are not the host's; after a reboot, pid and
 * start time begin again). Two processes with the same answer can tell
 * whether the other's pid is alive; otherwise they cannot.
 */
export function processSpace(): string {
  const read = (f: () => string) => {
    try {
      return f().trim();
    } catch {
      return "";
    }
  };
  space ??= [
    hostname(),
    read(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8")),
    read(() => readlinkSync("/proc/self/ns/pid")),
  ].join(" ");
  return space;
}
