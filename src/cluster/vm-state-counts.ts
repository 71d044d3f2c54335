import type { NodeRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { VmState } from "../gen/debvisor/v1/vm_pb.js";

/**
 * VMs by state over every node's stored report, kept as each record
 * changes, so reading them costs nothing however many VMs there are (the
 * /metrics scrape read them by listing every VM: 0.5 s of a blocked event
 * loop at 10,000 nodes of 20 VMs). A VM is in one node's stored report at a
 * time: copies of a VM placed elsewhere are kept out of reports as stale
 * copies, and a move rewrites both reports in one transaction.
 */
export interface VmStateCounts {
  /** Notes node `id`'s record as it is now (undefined: gone). */
  set(id: string, rec: NodeRecord | undefined): void;
  /** Forgets everything: the records are noted again after a reload. */
  clear(): void;
  /** VMs by state, states with none left out. */
  totals(): ReadonlyMap<VmState, number>;
}

/** An empty {@link VmStateCounts}. */
export function createVmStateCounts(): VmStateCounts {
  /** Each node's contribution, by state, as last noted. */
  const byNode = new Map<string, Map<VmState, number>>();
  const totals = new Map<VmState, number>();
  const add = (counts: ReadonlyMap<VmState, number>, sign: 1 | -1) => {
    for (const [state, n] of counts) {
      const left = (totals.get(state) ?? 0) + sign * n;
      if (left === 0) totals.delete(state);
      else totals.set(state, left);
    }
  };
  return {
    set(id, rec) {
      const before = byNode.get(id);
      if (before !== undefined) add(before, -1);
      const vms = rec?.health?.vms ?? [];
      if (rec === undefined) {
        byNode.delete(id);
        return;
      }
      const now = new Map<VmState, number>();
      for (const vm of vms) now.set(vm.state, (now.get(vm.state) ?? 0) + 1);
      byNode.set(id, now);
      add(now, 1);
    },
    clear() {
      byNode.clear();
      totals.clear();
    },
    totals: () => totals,
  };
}
