import type { NodeRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { VmState } from "../gen/debvisor/v1/vm_pb.js";

/** A node's copy of a VM, as listing every VM weighs it: when reported, whether the VM is placed there, and the node. */
export interface CopyWeight {
  readonly at: bigint;
  readonly placed: boolean;
  readonly node: string;
}

/**
 * Whether a copy reported `at` by `node`, `placed` or not, replaces `prev`:
 * the placed copy stays; else the newer report wins, and of two reports
 * received in the same millisecond the lower node key (never the order the
 * records happen to be in, which differs between processes).
 */
export function preferred(prev: CopyWeight, at: bigint, placed: boolean, node: string): boolean {
  return !prev.placed && (placed || prev.at < at || (prev.at === at && node < prev.node));
}

/** What {@link createVmStateCounts} reads. */
export interface VmStateSources {
  /** Node `key`'s record as stored now. */
  record(key: string): NodeRecord | undefined;
  /** Whether VM `vmId` is placed on the node of `rec`. */
  placed(vmId: string, rec: NodeRecord): boolean;
}

/**
 * VMs by state, each VM once, from the copy listing every VM shows (the
 * copy of the node it is placed on, else the newest report's): kept as
 * node records and placements change, so reading them costs nothing however
 * many VMs there are. The /metrics scrape counted them by listing every VM:
 * 0.5 s of blocked event loop at 10,000 nodes of 20 VMs.
 */
export interface VmStateCounts {
  /** Node `key`'s record changed (or is gone). */
  nodeChanged(key: string): void;
  /** VM `vmId`'s placement may have changed. */
  placementChanged(vmId: string): void;
  /** Counts every VM anew from these nodes' records (after a reload). */
  reset(keys: Iterable<string>): void;
  /** VMs by state, states with none left out (a copy). */
  totals(): Map<VmState, number>;
}

/** Where one VM is reported, and the state it is counted in. */
interface Entry {
  /** Keys of the nodes whose records list it, in the order they first did. */
  readonly nodes: string[];
  counted: VmState | undefined;
}

/** Empty counts over `sources`: call {@link VmStateCounts.reset} to load them. */
export function createVmStateCounts(sources: VmStateSources): VmStateCounts {
  const byVm = new Map<string, Entry>();
  /** The VM ids each node's record listed when last noted (each once). */
  const listed = new Map<string, readonly string[]>();
  const totals = new Map<VmState, number>();
  const add = (state: VmState | undefined, n: 1 | -1) => {
    if (state === undefined) return;
    const left = (totals.get(state) ?? 0) + n;
    if (left === 0) totals.delete(state);
    else totals.set(state, left);
  };
  /** The state of the copy listing every VM shows for `vmId`, from `nodes`. */
  function chosen(vmId: string, nodes: readonly string[]): VmState | undefined {
    let best: (CopyWeight & { state: VmState }) | undefined;
    for (const key of nodes) {
      const rec = sources.record(key);
      const vm = rec?.health?.vms.find((v) => v.id === vmId);
      if (rec === undefined || vm === undefined) continue;
      const placed = sources.placed(vmId, rec);
      if (best === undefined || preferred(best, rec.receivedAtMs, placed, key))
        best = { at: rec.receivedAtMs, placed, node: key, state: vm.state };
    }
    return best?.state;
  }
  function recount(vmId: string) {
    const e = byVm.get(vmId);
    if (e === undefined) return;
    add(e.counted, -1);
    e.counted = chosen(vmId, e.nodes);
    add(e.counted, 1);
    if (e.nodes.length === 0) byVm.delete(vmId);
  }
  function nodeChanged(key: string) {
    const before = listed.get(key) ?? [];
    const now = [...new Set(sources.record(key)?.health?.vms.map((v) => v.id) ?? [])];
    const kept = new Set(now);
    for (const id of before) {
      if (kept.has(id)) continue;
      const e = byVm.get(id);
      const at = e?.nodes.indexOf(key) ?? -1;
      if (e !== undefined && at >= 0) e.nodes.splice(at, 1);
    }
    const had = new Set(before);
    for (const id of now) {
      if (had.has(id)) continue;
      let e = byVm.get(id);
      if (e === undefined) {
        e = { nodes: [], counted: undefined };
        byVm.set(id, e);
      }
      e.nodes.push(key);
    }
    if (now.length === 0) listed.delete(key);
    else listed.set(key, now);
    for (const id of before) recount(id);
    for (const id of now) if (!had.has(id)) recount(id);
  }
  return {
    nodeChanged,
    placementChanged: recount,
    reset(keys) {
      byVm.clear();
      listed.clear();
      totals.clear();
      for (const key of keys) nodeChanged(key);
    },
    totals: () => new Map(totals),
  };
}
