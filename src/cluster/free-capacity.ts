/**
 * What a node can still take for placement (its capacity times the
 * overcommit ratios, less its VMs and in-flight reservations), and the
 * wording placement reasons share. Used by the migration planner and by the
 * placement of new VMs.
 */
import type { NodeSummary } from "../gen/debvisor/v1/node_pb.js";

/** Capacity in use by in-flight migrations on a node. */
export interface Reserved {
  readonly vcpus: number;
  readonly memoryBytes: bigint;
}

const GIB = 1024 ** 3;

/**
 * What a node can still take: its capacity times the overcommit ratios,
 * minus what its VMs use and what in-flight migrations reserved on it.
 */
export function freeCapacity(
  node: NodeSummary,
  reserved: ReadonlyMap<string, Reserved>,
  cpuOvercommit: number,
  memOvercommit: number,
): { vcpus: number; memory: bigint } {
  const id = node.info?.id?.id ?? "";
  const r = reserved.get(id);
  const cores = node.info?.capacity?.cpuCores ?? 0;
  const mem = node.info?.capacity?.memoryBytes ?? 0n;
  return {
    vcpus: Math.floor(cores * cpuOvercommit) - node.vcpusAllocated - (r?.vcpus ?? 0),
    memory:
      BigInt(Math.floor(Number(mem) * memOvercommit)) -
      node.memoryAllocatedBytes -
      (r?.memoryBytes ?? 0n),
  };
}

/** "1 node that passes every check", "3 nodes that pass every check". */
export function passingNodes(n: number): string {
  return n === 1 ? "1 node that passes every check" : `${n} nodes that pass every check`;
}

/** Bytes as GiB with one decimal, for reasons and event messages. */
export function gib(bytes: bigint): string {
  return `${(Number(bytes) / GIB).toFixed(1)} GiB`;
}
