/**
 * Each VM once, from the nodes' reports: the copy of the node it is placed
 * on, else the newest report's, shown on the node whose report holds it and
 * with the nodes holding stale copies of it. Pure functions over the node
 * records and the VM records (ListVms, GetVm, a dataset's owners).
 */
import { create } from "@bufbuild/protobuf";
import type { NodeRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { FacedRecords } from "./faced-records.js";
import { forStored, idOf, type Versioned } from "./node-records.js";
import { withStaleCopyNodes } from "./stale-copies.js";
import type { VmFacts } from "./vm-records.js";
import { type CopyWeight, preferred } from "./vm-state-counts.js";

/**
 * Each VM once: the copy of the node it is placed on (its record in the
 * store decides, never the latest report), else the copy from the node
 * that reported most recently; with the nodes holding stale copies of it.
 */
export function placedVms(records: Map<string, NodeRecord>, facts: VmFacts): Map<string, VmInfo> {
  const best = new Map<string, CopyWeight & { vm: VmInfo; rec: NodeRecord }>();
  for (const rec of records.values()) {
    const node = idOf(rec);
    const at = rec.receivedAtMs;
    for (const vm of rec.health?.vms ?? []) {
      const prev = best.get(vm.id);
      const placed = facts.get(vm.id)?.rec.nodeId === node;
      if (prev === undefined || preferred(prev, at, placed, node))
        best.set(vm.id, { vm, rec, at, placed, node });
    }
  }
  const out = new Map<string, VmInfo>();
  // On the node whose report holds it, as placedAmong (GetVm) has it.
  for (const [id, v] of best)
    out.set(id, withStaleCopyNodes(onNode(v.vm, v.rec), facts.get(id)?.rec));
  return out;
}

/**
 * The VMs `ids` as {@link placedVms} lists them, from the records `seen` with `facts`
 * (applied by `withFacts`): one pass over the reports.
 */
export function placedAmong(
  seen: ReadonlyMap<string, Versioned>,
  facts: VmFacts,
  ids: ReadonlySet<string>,
  withFacts: FacedRecords["withFacts"],
): Map<string, VmInfo> {
  const best = new Map<string, CopyWeight & { rec: NodeRecord; index: number }>();
  forStored(seen, (_, rec) => {
    const vms = rec.health?.vms ?? [];
    const at = rec.receivedAtMs;
    for (let index = 0; index < vms.length; index++) {
      const id = vms[index]?.id ?? "";
      if (!ids.has(id)) continue;
      const prev = best.get(id);
      const node = idOf(rec);
      const placed = facts.get(id)?.rec.nodeId === node;
      if (prev === undefined || preferred(prev, at, placed, node))
        best.set(id, { rec, index, at, placed, node });
    }
  });
  const out = new Map<string, VmInfo>();
  for (const [id, b] of best) {
    const vm = withFacts(b.rec, facts).health?.vms[b.index];
    if (vm !== undefined) out.set(id, withStaleCopyNodes(onNode(vm, b.rec), facts.get(id)?.rec));
  }
  return out;
}

/**
 * The VM as its node reported it, on that node: a report's own `node_id`
 * (empty from upstream reporters, in another case, or another node's) is
 * not where it runs; the node whose report holds it is.
 */
function onNode(vm: VmInfo, rec: NodeRecord): VmInfo {
  const id = rec.info?.id?.id ?? "";
  return vm.nodeId?.id === id
    ? vm
    : create(VmInfoSchema, { ...vm, nodeId: create(NodeIdSchema, { id }) });
}
