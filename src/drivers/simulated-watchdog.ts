import { readFileSync } from "node:fs";
import { readFileIfPresent, writeFileDurably } from "./durable-file.js";

/** The host's monotonic clock in nanoseconds (CLOCK_MONOTONIC: shared by every process of this boot). */
export const monotonicNs = (): bigint => process.hrtime.bigint();

/** What a watchdog file says. */
export interface WatchdogState {
  /** The boot the deadline belongs to: a monotonic time means nothing after a reboot. */
  readonly bootId: string;
  /** When the node resets unless the agent pets again (monotonic ns). */
  readonly deadlineNs: bigint;
  /** The window the agent was given (ms), so a restarted agent knows it before its first Welcome. */
  readonly windowMs: number;
  /** The deadline whose reset has been carried out (so it happens once). */
  readonly resetDeadlineNs?: bigint;
}

/**
 * A simulated hardware watchdog, `watchdog.json` in the agent's directory:
 * the agent pets it by writing a new deadline; once the host's monotonic
 * clock passes the deadline the node counts as reset (every domain
 * stopped), as a real watchdog device (softdog, iTCO) resets the machine
 * when its daemon stops petting it. A process frozen by SIGSTOP cannot
 * pet, so its node is reset on time even though it cannot act.
 */
export interface SimulatedWatchdog {
  read(): WatchdogState | undefined;
  /** Writes a new deadline, unless the current one has passed and its reset is not carried out yet. */
  pet(deadlineNs: bigint, windowMs: number): void;
  /** True when the deadline has passed and its reset was not carried out yet. */
  expired(nowNs?: bigint): boolean;
  /** Records that the expired deadline's reset was carried out. */
  resetDone(): void;
}

/** Where Linux tells the current boot's id (a new random one at every boot). */
export const BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id";

/** The current boot's id, read from `file` (Linux's by default); a constant where there is none. */
export function bootId(file = BOOT_ID_FILE): string {
  try {
    return readFileSync(file, "utf8").trim() || "unknown-boot";
  } catch {
    return "unknown-boot";
  }
}

interface WatchdogFile {
  bootId: string;
  deadlineNs: string;
  windowMs: number;
  resetDeadlineNs?: string;
}

/**
 * Opens the watchdog kept in `file` (nothing is written until the first
 * pet). `bootIdFile` says the host's boot: a test changes it to reboot a
 * simulated node (every domain stops).
 */
export function openSimulatedWatchdog(file: string, bootIdFile = BOOT_ID_FILE): SimulatedWatchdog {
  const boot = bootId(bootIdFile);
  const read = (): WatchdogState | undefined => {
    const text = readFileIfPresent(file);
    if (text === undefined) return undefined;
    const f = JSON.parse(text) as WatchdogFile;
    return {
      bootId: f.bootId,
      deadlineNs: BigInt(f.deadlineNs),
      windowMs: f.windowMs,
      resetDeadlineNs: f.resetDeadlineNs === undefined ? undefined : BigInt(f.resetDeadlineNs),
    };
  };
  const write = (s: WatchdogState) =>
    writeFileDurably(
      file,
      JSON.stringify({
        bootId: s.bootId,
        deadlineNs: String(s.deadlineNs),
        windowMs: s.windowMs,
        ...(s.resetDeadlineNs === undefined ? {} : { resetDeadlineNs: String(s.resetDeadlineNs) }),
      } satisfies WatchdogFile),
    );
  function expired(nowNs = monotonicNs()): boolean {
    const s = read();
    if (s === undefined) return false;
    // Another boot: the machine went down since, and its domains with it.
    if (s.bootId !== boot) return s.resetDeadlineNs !== s.deadlineNs;
    return nowNs > s.deadlineNs && s.resetDeadlineNs !== s.deadlineNs;
  }
  return {
    read,
    pet(deadlineNs, windowMs) {
      // Past its deadline the watchdog has fired: a real one resets the machine on its own
      // timer, and no pet undoes that. Here the reset is carried out at the next hypervisor
      // call, so a pet must not get there first: an agent frozen between its fencing check and
      // its pet, then resumed, petted the expired deadline away, and its node was never reset.
      if (expired()) return;
      write({ bootId: boot, deadlineNs, windowMs });
    },
    expired,
    resetDone() {
      const s = read();
      if (s !== undefined) write({ ...s, resetDeadlineNs: s.deadlineNs });
    },
  };
}
