/**
 * The timing rule that keeps a VM from running twice: an agent that has had
 * no confirmed renewal of its node's lease for the self-fence window stops
 * its HA VMs on its own clock; the control plane restarts them elsewhere
 * only after the lease expired and the fence delay passed. The fence delay
 * must exceed the window by a margin that covers the agent's time to
 * hard-stop its VMs and the rate difference of two clocks.
 */

/** The least margin between the self-fence window and the fence delay. */
export const MIN_FENCE_MARGIN_MS = 500;

/** The margin the fence delay must leave above a self-fence window of `windowMs`: a fifth of it, at least 500 ms. */
export function fenceMarginMs(windowMs: number): number {
  return Math.max(MIN_FENCE_MARGIN_MS, Math.ceil(windowMs / 5));
}

/**
 * The self-fence window agents are given: `configured`, or by default two
 * thirds of the fence delay (never more than the delay less the least
 * margin), which always satisfies {@link fenceDelayAllows}.
 */
export function selfFenceWindowMs(fenceDelayMs: number, configured?: number): number {
  if (configured !== undefined) return configured;
  return Math.max(
    1,
    Math.min(Math.floor((fenceDelayMs * 2) / 3), fenceDelayMs - MIN_FENCE_MARGIN_MS),
  );
}

/** True when `fenceDelayMs` is at least the window plus its margin. */
export function fenceDelayAllows(fenceDelayMs: number, windowMs: number): boolean {
  return fenceDelayMs >= windowMs + fenceMarginMs(windowMs);
}

/**
 * How late a lease renewal may come before an agent fences itself: the
 * window less the heartbeat interval (the renewal of the heartbeat before
 * must still be in force when the next one is sent). Under one interval,
 * a single slow renewal (a busy control plane, a stalled store) makes
 * healthy nodes stop their HA VMs.
 */
export function renewalSlackMs(windowMs: number, heartbeatIntervalMs: number): number {
  return windowMs - heartbeatIntervalMs;
}
