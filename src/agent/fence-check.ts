/**
 * The self-fence's clock check: past the deadline it hard-stops the HA
 * VMs, and it pets the watchdog with the deadline plus a grace, so a
 * frozen agent's node is reset soon after it would have fenced.
 */
import type { Logger } from "../core/index.js";
import type { HypervisorDriver, SimulatedWatchdog } from "../drivers/index.js";
import { DISARMED_MS, MS, type SelfFenceState, watchdogGraceMs } from "./self-fence-state.js";

/** What {@link createFenceCheck} needs of the self-fence's options (the options themselves fit). */
export interface FenceCheckDeps {
  readonly driver: HypervisorDriver;
  /** Whether a domain is highly available: these are stopped. */
  isHa(vmId: string): boolean;
  readonly watchdog?: SimulatedWatchdog;
  readonly logger: Logger;
  /** Told of each VM it hard-stopped, once every stop of the check is made. */
  readonly onFenced?: (vmId: string) => void;
}

/** The check and the watchdog pet a guarded call runs first, in this order. */
export interface FenceCheck {
  /** Checks the clock and hard-stops the HA VMs if the deadline passed. */
  check(): Promise<void>;
  /** Pets the watchdog (if any) with the current deadline plus a grace. */
  pet(): void;
}

/** Creates the check over the shared state, on the monotonic clock `now`. */
export function createFenceCheck(
  state: SelfFenceState,
  deps: FenceCheckDeps,
  now: () => bigint,
): FenceCheck {
  const { driver, logger: log, watchdog } = deps;

  async function check(): Promise<void> {
    const t = now();
    const gapMs = Number((t - state.lastTick) / MS);
    state.lastTick = t;
    if (gapMs > 2 * state.tickMs + 1000)
      log.warn({ gapMs }, "the agent was paused; checking fencing first");
    const expired = state.windowMs > 0 && state.deadline !== undefined && t > state.deadline;
    // A simulated node: any hypervisor call applies what its watchdog and storage did meanwhile.
    if (!expired && watchdog === undefined) return;
    const domains = await driver.list(AbortSignal.timeout(30_000));
    if (!expired || state.deadline === undefined) return;
    // Past the deadline no HA VM may run, including one started since the fence; a paused
    // one holds its disks open and could be resumed, so it is stopped too.
    const ha = domains.filter(
      (d) => (d.state === "running" || d.state === "paused") && deps.isHa(d.id),
    );
    if (ha.length > 0)
      log.error(
        {
          windowMs: state.windowMs,
          lateMs: Number((t - state.deadline) / MS),
          vms: ha.map((d) => d.id),
        },
        "self-fencing: no confirmed lease renewal within the window; hard-stopping HA vms",
      );
    let stopped = true;
    const done: string[] = [];
    for (const d of ha)
      await driver.stop(d.id, { force: true, signal: AbortSignal.timeout(30_000) }).then(
        () => void done.push(d.id),
        (err: unknown) => {
          stopped = false;
          log.error({ err, vm: d.id }, "self-fence stop failed");
        },
      );
    // Told once every stop is made: what hears it writes a file (an fsync each, on a disk that
    // may be why renewals lapsed), and that must not hold up the next VM's stop.
    for (const id of done) deps.onFenced?.(id);
    // Only once none runs does the watchdog stop following the lapsed deadline.
    state.fenced = stopped;
  }

  function pet(): void {
    if (watchdog === undefined) return;
    const t = now();
    const { windowMs, deadline } = state;
    if (windowMs === 0) {
      watchdog.pet(t + BigInt(DISARMED_MS) * MS, DISARMED_MS);
      return;
    }
    const w = BigInt(windowMs) * MS;
    const grace = BigInt(watchdogGraceMs(windowMs)) * MS;
    const limit =
      state.fenced || deadline === undefined ? t + w : deadline < t + w ? deadline : t + w;
    watchdog.pet(limit + grace, windowMs);
  }

  return { check, pet };
}
