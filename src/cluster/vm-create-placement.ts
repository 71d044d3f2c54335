import { nodeKey, RpcError } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { VmSpec } from "../gen/debvisor/v1/vm_pb.js";
import { freeCapacity, gib, passingNodes, type Reserved } from "./free-capacity.js";

/** What placing a new VM looks at. */
export interface PlacementInput {
  readonly spec: VmSpec;
  readonly nodes: readonly NodeSummary[];
  /** Capacity held by in-flight migrations, by node. */
  readonly reserved: ReadonlyMap<string, Reserved>;
  /** Capacity of VMs created on a node that its reports do not show yet. */
  readonly pending: ReadonlyMap<string, Reserved>;
  /** The node asked for; empty: the roomiest that passes every check. */
  readonly target: string;
  readonly cpuOvercommit: number;
  readonly memoryOvercommit: number;
  /**
   * The caller is confined to a tenant: refusals say in words which check a
   * node failed, never its free vCPUs or memory, which are what every
   * tenant's VMs leave (its node list shows only its own use).
   */
  readonly confined: boolean;
}

/** Where a new VM goes, and why. */
export interface Placement {
  readonly nodeId: string;
  readonly reason: string;
}

/**
 * The first check a node fails for the spec, or undefined when it passes
 * all: the checks of migration planning that apply to a VM that does not
 * exist yet (ready, not cordoned, free vCPUs and memory after reservations,
 * the CPU model offered, RBD pools reachable); free figures only for a
 * caller that is not confined.
 */
function refusal(node: NodeSummary, input: PlacementInput): string | undefined {
  const id = node.info?.id?.id ?? "";
  const { spec } = input;
  if (node.readiness !== NodeReadiness.READY) return `${id} is not ready`;
  if (node.cordoned) return `${id} is cordoned`;
  const room = freeCapacity(node, input.reserved, input.cpuOvercommit, input.memoryOvercommit);
  const pending = input.pending.get(id);
  const vcpus = room.vcpus - (pending?.vcpus ?? 0);
  const memory = room.memory - (pending?.memoryBytes ?? 0n);
  if (vcpus < spec.vcpus)
    return input.confined
      ? `${id} has not enough free vCPUs for the vm`
      : `${id} has ${Math.max(0, vcpus)} vCPUs free after reservations; vm needs ${spec.vcpus}`;
  if (memory < spec.memoryBytes)
    return input.confined
      ? `${id} has not enough free memory for the vm`
      : `${id} has ${gib(memory < 0n ? 0n : memory)} free after reservations; vm needs ${gib(spec.memoryBytes)}`;
  const model = spec.cpuModel;
  if (
    model !== "" &&
    model !== "host-model" &&
    model !== "host-passthrough" &&
    node.info?.cpuModel !== model &&
    !(node.info?.cpuModels ?? []).includes(model)
  )
    return `${id} does not offer CPU model ${model}`;
  for (const disk of spec.disks) {
    const d = disk.dataset;
    if (
      d?.backend === StorageBackend.BACKEND_RBD &&
      !(node.info?.sharedPools ?? []).includes(d.pool)
    )
      return `${id} does not reach RBD pool ${d.pool}`;
  }
  return undefined;
}

/**
 * Picks the node for a new VM: the one asked for if it passes every check
 * (NODE_NOT_FOUND when unknown, NO_TARGET naming the failed check), else the
 * one with the most free memory (then vCPUs) of those that pass (NO_TARGET
 * listing why the first ones failed when none does).
 */
export function placeVm(input: PlacementInput): Placement {
  if (input.target !== "") {
    const node = input.nodes.find((n) => nodeKey(n.info?.id?.id ?? "") === nodeKey(input.target));
    if (node === undefined) throw new RpcError("NODE_NOT_FOUND");
    const why = refusal(node, input);
    if (why !== undefined)
      throw new RpcError("NO_TARGET", { message: `cannot place the vm: ${why}` });
    return { nodeId: node.info?.id?.id ?? input.target, reason: "requested" };
  }
  const passing: { id: string; memory: bigint; vcpus: number }[] = [];
  const refusals: string[] = [];
  for (const node of input.nodes) {
    const why = refusal(node, input);
    const id = node.info?.id?.id ?? "";
    if (why !== undefined) {
      if (refusals.length < 5) refusals.push(why);
      continue;
    }
    const room = freeCapacity(node, input.reserved, input.cpuOvercommit, input.memoryOvercommit);
    const pending = input.pending.get(id);
    passing.push({
      id,
      memory: room.memory - (pending?.memoryBytes ?? 0n),
      vcpus: room.vcpus - (pending?.vcpus ?? 0),
    });
  }
  passing.sort((a, b) =>
    a.memory !== b.memory
      ? a.memory > b.memory
        ? -1
        : 1
      : b.vcpus - a.vcpus || (a.id < b.id ? -1 : 1),
  );
  const best = passing[0];
  if (best === undefined)
    throw new RpcError("NO_TARGET", {
      message:
        input.nodes.length === 0
          ? "cannot place the vm: no nodes"
          : `cannot place the vm: ${input.nodes.length === 1 ? "the only node does not pass" : `none of ${input.nodes.length} nodes passes`} every check: ${refusals.join("; ")}`,
    });
  return {
    nodeId: best.id,
    reason: `most free memory after reservations (${gib(best.memory)}, ${best.vcpus} vCPUs free) of ${passingNodes(passing.length)}`,
  };
}
