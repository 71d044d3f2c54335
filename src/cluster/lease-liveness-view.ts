/**
 * A node's liveness from its two liveness keys: READY while its READY key
 * is present, past the fence delay once its fence key is gone too (and
 * this process has looked long enough to tell).
 */
import type { LivenessMirrorState } from "./liveness-mirrors.js";
import type { LivenessView } from "./node-liveness.js";
import type { HeldKey } from "./renew-lease-key.js";

/** The view of node `id` given its keys (undefined: absent), at `now` on this process's clock. */
export type LeaseLivenessView = (
  id: string,
  readyKey: HeldKey | undefined,
  fenceKey: HeldKey | undefined,
  now: number,
) => LivenessView;

/** Creates the view over the copy's state; `fenceTtlMs` is how long the copy must have looked. */
export function createLeaseLivenessView(
  state: LivenessMirrorState,
  fenceDelayMs: number,
  fenceTtlMs: number,
): LeaseLivenessView {
  const { lostAt } = state;
  return function view(id, readyKey, fenceKey, now) {
    if (readyKey !== undefined) {
      lostAt.delete(id);
      return { ready: true, notReadyForMs: 0, pastFenceDelay: false };
    }
    let since = lostAt.get(id);
    if (since === undefined) {
      since = now;
      lostAt.set(id, now);
    }
    const elapsed = Math.max(0, now - since);
    const settled = state.loaded !== undefined && now - state.startedAt >= fenceTtlMs;
    const pastFenceDelay = fenceKey === undefined && settled;
    // The store decides; the duration shown is this process's observation, kept consistent with it.
    const notReadyForMs = pastFenceDelay
      ? Math.max(elapsed, fenceDelayMs + 1)
      : Math.min(elapsed, fenceDelayMs);
    return { ready: false, notReadyForMs, pastFenceDelay };
  };
}
