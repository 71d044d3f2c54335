/**
 * The failover controller's memory of the nodes that failed to restart a VM
 * (its recover failed after the failover began): such a node is not picked
 * for that VM again for {@link AVOID_FAILED_TARGET_MS}. Without it the pass
 * picked the same roomiest node at every pass, so one node that failed every
 * restart (a stolen node certificate, a broken host) kept an HA VM down for
 * good and wrote a failed failover record and its events every 2 s.
 * In memory: a new leader tries such a node once more.
 *
 * Only a failure whose outcome is known: a recover that timed out or was
 * interrupted may have started the VM on that node, and sent elsewhere the
 * VM would then run on two nodes until the disks' fence stopped one; the
 * same node is asked again, as before (a node answering so every time can
 * still keep the VM down).
 */

/** How long a node that failed to restart a VM is not picked for it again. */
export const AVOID_FAILED_TARGET_MS = 5 * 60_000;

/** Reasons of a failed recover whose outcome is unknown: the VM may run on that node. */
const UNKNOWN_OUTCOME: ReadonlySet<string> = new Set([
  "BACKEND_TIMEOUT",
  "OPERATION_INTERRUPTED",
  "CANCELLED",
  "DEADLINE_EXCEEDED",
]);

/** VMs whose failed targets are remembered; past it the least recently failed are forgotten. */
const MAX_VMS = 10_000;

/** The nodes that failed to restart each VM, and when. */
export interface FailedTargets {
  /** The nodes (keys) not to restart `vmId` on now, with the reason; undefined when none. */
  avoid(vmId: string, now: number): ReadonlyMap<string, string> | undefined;
  /** `node` failed to restart `vmId` at `now` with `reason`; false when not remembered (outcome unknown). */
  failed(vmId: string, node: string, now: number, reason: string): boolean;
  /** `vmId` was restarted: its failures are forgotten. */
  restarted(vmId: string): void;
}

/** Creates the {@link FailedTargets}; `nodeKey` gives the key a node id is compared by. */
export function createFailedTargets(nodeKey: (id: string) => string): FailedTargets {
  const byVm = new Map<string, Map<string, number>>();
  const reason = `failed to restart this vm within the last ${AVOID_FAILED_TARGET_MS / 60_000} min`;
  return {
    avoid(vmId, now) {
      const nodes = byVm.get(vmId);
      if (nodes === undefined) return undefined;
      const out = new Map<string, string>();
      for (const [node, at] of nodes)
        if (now - at < AVOID_FAILED_TARGET_MS) out.set(node, reason);
        else nodes.delete(node);
      if (nodes.size === 0) byVm.delete(vmId);
      return out.size === 0 ? undefined : out;
    },
    failed(vmId, node, now, why) {
      if (UNKNOWN_OUTCOME.has(why)) return false;
      const nodes = byVm.get(vmId) ?? new Map<string, number>();
      byVm.delete(vmId);
      if (byVm.size >= MAX_VMS) byVm.delete(byVm.keys().next().value as string);
      nodes.set(nodeKey(node), now);
      byVm.set(vmId, nodes);
      return true;
    },
    restarted(vmId) {
      byVm.delete(vmId);
    },
  };
}
