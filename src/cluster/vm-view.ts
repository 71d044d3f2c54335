import { create } from "@bufbuild/protobuf";
import { nodeKey } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";

/**
 * A VM as the API shows it, given its node's summary: what the node last
 * reported while the node is READY; UNKNOWN once the node is NOT_READY
 * (the report may be stale); STOPPED once the node has been NOT_READY past
 * `fenceDelayMs`, by when it has fenced itself and stopped its VMs (the
 * premise failover rests on). A VM reported stopped stays stopped. Without a
 * fence delay (no cluster runtime) a down node's VMs stay UNKNOWN.
 */
export function observedVm(
  vm: VmInfo,
  node: NodeSummary | undefined,
  fenceDelayMs: number | undefined,
): VmInfo {
  if (node === undefined || node.readiness !== NodeReadiness.NOT_READY) return vm;
  if (vm.state === VmState.STOPPED) return vm;
  const fenced = fenceDelayMs !== undefined && Number(node.notReadyForMs) > fenceDelayMs;
  return create(VmInfoSchema, { ...vm, state: fenced ? VmState.STOPPED : VmState.UNKNOWN });
}

/** {@link observedVm} for many VMs, with every node's summary at hand. */
export function observedVms(
  vms: readonly VmInfo[],
  nodes: readonly NodeSummary[],
  fenceDelayMs: number | undefined,
): VmInfo[] {
  // Node ids ignore case, as the inventory's own lookups do.
  const byId = new Map(nodes.map((n) => [nodeKey(n.info?.id?.id ?? ""), n]));
  return vms.map((vm) => observedVm(vm, byId.get(nodeKey(vm.nodeId?.id ?? "")), fenceDelayMs));
}
