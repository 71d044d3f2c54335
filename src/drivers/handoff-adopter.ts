// A local simulation's intake of migrated domains: takes in the domains
// other nodes handed over into this node's inbox (see sim-handoff.ts).

import type { LocalSimContext } from "./local-simulation-context.js";
import { readHandoffs } from "./sim-handoff.js";
import { lockNamesOf } from "./simulated-disk-locks.js";

/** How long a handed-over running domain waits for its disks' locks to move here. */
const HANDOFF_LOCK_WAIT_MS = 2000;

/**
 * Creates the adopter: each call takes in the domains other nodes handed
 * over (read-only: shows them, as they are about to be).
 */
export function createHandoffAdopter(ctx: LocalSimContext): () => void {
  const { dir, world, locks, nodeId, readOnly, note, persist } = ctx;
  /** Takes in domains other nodes handed over (read-only: shows them, as they are about to be). */
  return function adopt() {
    let changed = false;
    readHandoffs(
      dir,
      (h, ageMs) => {
        // The source moves the disks' locks and writes the handoff in one step,
        // but the file shows a moment before the locks' move commits: adopted
        // then, a running domain would be fenced (its locks still the source's).
        // It waits for the move, for a while.
        if (
          locks !== undefined &&
          h.state === "running" &&
          ageMs < HANDOFF_LOCK_WAIT_MS &&
          locks.lost(lockNamesOf(h.info), nodeId).length > 0
        )
          return false;
        world.vms.set(h.info.id, { info: h.info, node: nodeId, state: h.state });
        changed = true;
        if (!readOnly) note(`adopt-from-${h.from}`, h.info.id);
        return true;
      },
      !readOnly,
    );
    if (changed) persist();
  };
}
