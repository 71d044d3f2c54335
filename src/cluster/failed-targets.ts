/**
 * The failover controller's memory of the nodes that failed to restart a VM
 * (its recover failed after the failover began): such a node is not picked
 * for that VM again for {@link FIRST_AVOID_MS}, doubled at each further
 * failure of it up to {@link AVOID_FAILED_TARGET_MS}. Without it the pass
 * picked the same roomiest node at every pass, so one node that failed every
 * restart (a stolen node certificate, a broken host) kept an HA VM down for
 * good and wrote a failed failover record and its events every 2 s. Not 5
 * minutes at the first failure: a failure of every node alike (the VM's
 * storage out for a few seconds) then kept the VM down for 5 minutes after
 * it ended. In memory: a new leader tries such a node once more. Shared
 * with the HA restore (ha-restore.ts): a node back whose start of the VM
 * failed is asked again the same way, and a node that failed either is
 * avoided by the other.
 *
 * A recover that timed out or was interrupted counts: it may have started
 * the VM there, but the restart elsewhere holds a newer generation, so that
 * copy is fenced from the disks and removed as stale; asked again instead,
 * a node that hangs every recover held the VM, and every pass, for good.
 * Only a recover the controller cut short itself (it is stopping) is not
 * the node's failure: its caller, which knows its own signal, does not
 * report it. Not told by the error's reason: a node (a stolen node
 * certificate) answering every restart CANCELLED, as an agent may, was
 * taken for one cut short and picked at every pass, keeping the VM down for
 * good (an adversarial review; test/failover-failing-target.test.ts).
 */

import { createRecencyMap } from "../core/index.js";

/** How long a node that failed to restart a VM once is not picked for it again. */
export const FIRST_AVOID_MS = 10_000;
/** The longest a node that keeps failing to restart a VM is not picked for it. */
export const AVOID_FAILED_TARGET_MS = 5 * 60_000;

/** VMs whose failed targets are remembered; past it the least recently failed are forgotten. */
const MAX_VMS = 10_000;

/** The nodes that failed to restart each VM: when last, and how often in a row. */
export interface FailedTargets {
  /** The nodes (keys) not to restart `vmId` on now, with the reason; undefined when none. */
  avoid(vmId: string, now: number): ReadonlyMap<string, string> | undefined;
  /** `node` failed to restart `vmId` at `now` (not a restart the caller cut short itself). */
  failed(vmId: string, node: string, now: number): void;
  /** `vmId` was restarted: its failures are forgotten. */
  restarted(vmId: string): void;
}

/** Creates the {@link FailedTargets}; `nodeKey` gives the key a node id is compared by. */
export function createFailedTargets(nodeKey: (id: string) => string): FailedTargets {
  const byVm = createRecencyMap<string, Map<string, { at: number; times: number }>>(MAX_VMS);
  const avoidMs = (times: number) =>
    Math.min(AVOID_FAILED_TARGET_MS, FIRST_AVOID_MS * 2 ** Math.min(times - 1, 30));
  return {
    avoid(vmId, now) {
      const nodes = byVm.get(vmId);
      if (nodes === undefined) return undefined;
      const out = new Map<string, string>();
      for (const [node, { at, times }] of nodes) {
        const ms = avoidMs(times);
        if (now - at < ms)
          out.set(
            node,
            `failed to restart this vm ${times} time(s); not asked again for ${ms / 1000} s`,
          );
        // Its count is kept a while longer, so a node failing again is avoided longer.
        else if (now - at >= 2 * AVOID_FAILED_TARGET_MS) nodes.delete(node);
      }
      if (nodes.size === 0) byVm.delete(vmId);
      return out.size === 0 ? undefined : out;
    },
    failed(vmId, node, now) {
      const nodes = byVm.get(vmId) ?? new Map<string, { at: number; times: number }>();
      const key = nodeKey(node);
      nodes.set(key, { at: now, times: (nodes.get(key)?.times ?? 0) + 1 });
      byVm.touch(vmId, nodes);
    },
    restarted(vmId) {
      byVm.delete(vmId);
    },
  };
}
