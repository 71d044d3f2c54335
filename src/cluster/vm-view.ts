import { create } from "@bufbuild/protobuf";
import { nodeKey, sameNode } from "../core/index.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";

/**
 * A VM as the API shows it, given its node's summary: what the node last
 * reported while the node is READY; UNKNOWN once the node is NOT_READY
 * (the report may be stale); STOPPED once the node has been NOT_READY past
 * `fenceDelayMs`, by when it has fenced itself and stopped its VMs (the
 * premise failover rests on). A VM reported stopped stays stopped. Without a
 * fence delay (no cluster runtime) a down node's VMs stay UNKNOWN.
 *
 * A VM shown from a NOT_READY node's report while its record places it on
 * another node (`placedOn`, which does not report it: the inventory shows
 * the placed node's copy first) is shown on that node, in the state above:
 * a failover placed it there and its restart failed or has not run yet.
 * Shown on the dead node, it looked like a VM nobody had tried to restart,
 * with nothing saying the failover had moved it (its events say why the
 * restart failed).
 */
export function observedVm(
  vm: VmInfo,
  node: NodeSummary | undefined,
  fenceDelayMs: number | undefined,
  placedOn = "",
): VmInfo {
  if (node === undefined || node.readiness !== NodeReadiness.NOT_READY) return vm;
  const fenced = fenceDelayMs !== undefined && Number(node.notReadyForMs) > fenceDelayMs;
  const state = vm.state === VmState.STOPPED || fenced ? VmState.STOPPED : VmState.UNKNOWN;
  const elsewhere = placedOn !== "" && !sameNode(placedOn, vm.nodeId?.id ?? "");
  if (state === vm.state && !elsewhere) return vm;
  return create(VmInfoSchema, {
    ...vm,
    state,
    ...(elsewhere ? { nodeId: create(NodeIdSchema, { id: placedOn }) } : {}),
  });
}

/**
 * {@link observedVm} for many VMs, with every node's summary at hand and
 * where each VM is placed (`placedOn`: the node its record names, or "").
 */
export function observedVms(
  vms: readonly VmInfo[],
  nodes: readonly NodeSummary[],
  fenceDelayMs: number | undefined,
  placedOn: (vmId: string) => string = () => "",
): VmInfo[] {
  // Node ids ignore case, as the inventory's own lookups do.
  const byId = new Map(nodes.map((n) => [nodeKey(n.info?.id?.id ?? ""), n]));
  return vms.map((vm) =>
    observedVm(vm, byId.get(nodeKey(vm.nodeId?.id ?? "")), fenceDelayMs, placedOn(vm.id)),
  );
}

/** Every VM as ListVms and WatchVms show it: {@link observedVms}, each at its placement. */
export async function listedVms(
  inventory: Pick<Inventory, "listVms" | "listNodes" | "vmRecords">,
  fenceDelayMs: number | undefined,
  signal: AbortSignal,
): Promise<VmInfo[]> {
  const vms = await inventory.listVms(signal);
  const nodes = await inventory.listNodes(signal);
  const facts = await inventory.vmRecords.all();
  return observedVms(vms, nodes, fenceDelayMs, (id) => facts.get(id)?.rec.nodeId ?? "");
}
