/**
 * The inventory's reads of VMs: every VM once (ListVms), one VM (GetVm and
 * every call on a VM), the VMs with a given disk, VMs by state for
 * /metrics, and the VM records naming stale copies.
 */
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { FacedRecords } from "./faced-records.js";
import type { Inventory } from "./inventory.js";
import { compareIds, forStored, idOf, type NodeRecords } from "./node-records.js";
import { placedAmong, placedVms } from "./placed-vms.js";
import type { VmRecords } from "./vm-records.js";
import { createVmStateCounts, type VmStateCounts } from "./vm-state-counts.js";

/** What {@link createInventoryVms} works with. */
export interface InventoryVmsDeps {
  readonly vmRecords: VmRecords;
  readonly withFacts: FacedRecords["withFacts"];
  readonly nodeRecords: NodeRecords;
}

/** The inventory's reads of VMs, and one VM as listed for the inventory's other parts. */
export interface InventoryVms
  extends Pick<Inventory, "listVms" | "vmsByState" | "conflicts" | "findVm" | "vmsWithDisk"> {
  /**
   * One VM as {@link placedVms} lists it, merging no other: every VM call
   * finds its VM (tenancy, planning, failover), and merging every report for
   * it cost as much as listing them all (20 ms at 1,000 nodes of 20 VMs).
   * It still passes over every reported copy's id, without allocating.
   */
  placedVm(vmId: string): Promise<VmInfo | undefined>;
}

/** Creates the inventory's {@link InventoryVms}. */
export function createInventoryVms(deps: InventoryVmsDeps): InventoryVms {
  const { vmRecords, withFacts, nodeRecords } = deps;
  /** VMs by state, kept as node records and placements change once first asked for. */
  let byState: VmStateCounts | undefined;
  async function placedVm(vmId: string): Promise<VmInfo | undefined> {
    return placedAmong(
      (await nodeRecords.follow()).values(),
      await vmRecords.all(),
      new Set([vmId]),
      withFacts,
    ).get(vmId);
  }
  return {
    placedVm,
    async listVms(signal) {
      signal?.throwIfAborted();
      const facts = await vmRecords.all();
      return [...placedVms(await nodeRecords.records(), facts).values()].sort((a, b) =>
        compareIds(a.id, b.id),
      );
    },
    async vmsByState(signal) {
      signal?.throwIfAborted();
      const m = await nodeRecords.follow();
      const facts = await vmRecords.all();
      if (byState === undefined) {
        const counts = createVmStateCounts({
          record: (key) => m.values().get(key)?.rec,
          placed: (vmId, rec) => facts.get(vmId)?.rec.nodeId === idOf(rec),
        });
        counts.reset(m.values().keys());
        m.onChange((key) =>
          key === undefined ? counts.reset(m.values().keys()) : counts.nodeChanged(key),
        );
        vmRecords.onChange((id) =>
          id === undefined ? counts.reset(m.values().keys()) : counts.placementChanged(id),
        );
        byState = counts;
      }
      return byState.totals();
    },
    async conflicts(signal) {
      signal?.throwIfAborted();
      const out = (await vmRecords.withStaleCopies()).map((v) => v.rec);
      return out.sort((a, b) => compareIds(a.id, b.id));
    },
    async findVm(vmId, signal) {
      signal?.throwIfAborted();
      return placedVm(vmId);
    },
    async vmsWithDisk(matches, signal) {
      signal?.throwIfAborted();
      // Disks are the nodes' to report (the control plane's facts never change them):
      // a VM is listed with such a disk only if one of its reported copies has one.
      const seen = (await nodeRecords.follow()).values();
      const facts = await vmRecords.all();
      const ids = new Set<string>();
      forStored(seen, (_, rec) => {
        for (const vm of rec.health?.vms ?? []) if (vm.disks.some(matches)) ids.add(vm.id);
      });
      const out = [...placedAmong(seen, facts, ids, withFacts).values()].filter((vm) =>
        vm.disks.some(matches),
      );
      return out.sort((a, b) => compareIds(a.id, b.id));
    },
  };
}
