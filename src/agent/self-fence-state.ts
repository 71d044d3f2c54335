/**
 * The self-fence's shared state (its window, deadline and whether it
 * fenced) and the constants its parts agree on; restored from the
 * watchdog so a restart within the window keeps the deadline it earned.
 */
import type { SimulatedWatchdog } from "../drivers/index.js";

/** Nanoseconds in a millisecond. */
export const MS = 1_000_000n;
/** Pet the watchdog with this deadline while self-fencing is off (window 0): far away, disarmed. */
export const DISARMED_MS = 365 * 86_400_000;

/** The grace between the agent's deadline and the watchdog's: time to stop the HA VMs. */
export function watchdogGraceMs(windowMs: number): number {
  return Math.max(200, Math.min(5000, Math.floor(windowMs / 4)));
}

/** The mutable state the self-fence's parts share (monotonic ns, never the wall clock). */
export interface SelfFenceState {
  /** The window of the server's Welcome (0: self-fencing off). */
  windowMs: number;
  /** Until when HA VMs may run (monotonic ns); undefined before any confirmation. */
  deadline: bigint | undefined;
  fenced: boolean;
  lastTick: bigint;
  tickMs: number;
}

/** The initial state at `lastTick`, taking over a previous run's deadline from the watchdog. */
export function restoreSelfFenceState(
  lastTick: bigint,
  watchdog: SimulatedWatchdog | undefined,
): SelfFenceState {
  const state: SelfFenceState = {
    windowMs: 0,
    deadline: undefined,
    fenced: false,
    lastTick,
    tickMs: 1000,
  };
  // A restart within the window keeps the deadline the previous run earned.
  const previous = watchdog?.read();
  if (previous !== undefined && previous.windowMs > 0 && previous.windowMs < DISARMED_MS) {
    state.windowMs = previous.windowMs;
    state.deadline = previous.deadlineNs - BigInt(watchdogGraceMs(state.windowMs)) * MS;
  }
  return state;
}

/** Whether the node holds a confirmed lease at `t`: off, unconfirmed yet, or not past the deadline. */
export function leasedAt(state: SelfFenceState, t: bigint): boolean {
  return !(state.windowMs > 0 && state.deadline !== undefined && t > state.deadline);
}
