import type { ChaosHistory } from "./chaos-history.js";
import type { Observation } from "./chaos-observer.js";

/**
 * Counts what the long partitions are there for: a VM that ran on a node
 * when the node was cut off, seen running on another node while the
 * partition still holds (a failover away from a node that is alive, so its
 * own fencing had to stop its copy). Fed every checker sample.
 */
export function createCutOffWatch(cutOff: () => readonly string[], history: ChaosHistory) {
  /** Node to the VMs it ran when first seen cut off. */
  const held = new Map<string, Set<string>>();
  const seen = new Set<string>();
  return {
    sample(o: Observation): void {
      const now = new Set(cutOff());
      for (const node of held.keys()) if (!now.has(node)) held.delete(node);
      for (const node of now) {
        let vms = held.get(node);
        if (vms === undefined) {
          vms = new Set([...o.running].filter(([, on]) => on.includes(node)).map(([vm]) => vm));
          held.set(node, vms);
        }
        for (const vm of vms) {
          const elsewhere = (o.running.get(vm) ?? []).filter((n) => n !== node);
          const key = `${vm} ${node}`;
          if (elsewhere.length === 0 || seen.has(key)) continue;
          seen.add(key);
          history.add("note", `${vm} runs on ${elsewhere.join("+")} while ${node} is cut off`);
        }
      }
    },
    /** VMs failed over away from a cut-off node so far. */
    count: () => seen.size,
  };
}
