import { create } from "@bufbuild/protobuf";
import {
  StaleCopySchema,
  type VmRecord,
  VmRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage, type KvStore, LOST, retryWhileLost } from "../store/index.js";
import type { Inventory } from "./inventory.js";
import type { VmRecords } from "./vm-records.js";

const VMS = "vms/";
/** What a change that lost every attempt ends with: nothing, no error (the change is not made). */
const dropped = () => undefined;

/**
 * Conflicts: copies of a VM reported by a node it is not placed on. The
 * placement (the VM record's node and generation) decides which copy is
 * real; the others are kept on the record as stale copies, shown, counted,
 * and removed from their nodes, never taken for a placement.
 */
export interface StaleCopies {
  /** Records what `nodeId` reports now: these copies are stale; its others are gone. */
  note(nodeId: string, stale: readonly VmInfo[], signal?: AbortSignal): Promise<void>;
}

/** Follows the records in `vmRecords` and writes stale copies to `store`. */
export function createStaleCopies(store: KvStore, vmRecords: VmRecords): StaleCopies {
  /** Rewrites one VM's record under compare-and-swap; `change` returns undefined for no write. */
  async function change(
    vmId: string,
    edit: (rec: VmRecord) => VmRecord | undefined,
    signal?: AbortSignal,
  ) {
    return retryWhileLost(
      4,
      async () => {
        const got = await getMessage(store, VmRecordSchema, VMS + vmId, { signal });
        if (got === undefined) return;
        const next = edit(got.message);
        if (next === undefined) return;
        const w = vmRecords.write(next, got.modRevision);
        const txn = await store.txn({ compares: [w.compare], success: [w.op] }, { signal });
        if (txn.succeeded) {
          vmRecords.remember(next, txn.revision);
          return;
        }
        return LOST;
      },
      dropped,
    );
  }
  return {
    async note(nodeId, stale, signal) {
      const facts = await vmRecords.all();
      const reported = new Set<string>();
      for (const vm of stale) {
        reported.add(vm.id);
        const known = facts.get(vm.id)?.rec.staleCopies.find((c) => c.nodeId === nodeId);
        if (known !== undefined && known.state === vm.state) continue;
        await change(
          vm.id,
          (rec) => {
            if (rec.nodeId === nodeId) return undefined;
            const prev = rec.staleCopies.find((c) => c.nodeId === nodeId);
            const copy = create(StaleCopySchema, {
              nodeId,
              generation: prev?.generation ?? rec.generation,
              cleanupSent: prev?.cleanupSent ?? false,
              removalRefused: prev?.removalRefused ?? false,
              refusedGeneration: prev?.refusedGeneration ?? 0n,
              state: vm.state,
            });
            const others = rec.staleCopies.filter((c) => c.nodeId !== nodeId);
            return create(VmRecordSchema, { ...rec, staleCopies: [...others, copy] });
          },
          signal,
        );
      }
      for (const v of await vmRecords.withStaleCopies(nodeId)) {
        if (reported.has(v.rec.id)) continue;
        // The node no longer reports it: the conflict is over.
        await change(
          v.rec.id,
          (rec) =>
            rec.staleCopies.some((c) => c.nodeId === nodeId)
              ? create(VmRecordSchema, {
                  ...rec,
                  staleCopies: rec.staleCopies.filter((c) => c.nodeId !== nodeId),
                })
              : undefined,
          signal,
        );
      }
    },
  };
}

/** The VM as listed, with the nodes its record names as holding stale copies. */
export function withStaleCopyNodes(vm: VmInfo, rec: VmRecord | undefined): VmInfo {
  const nodes = rec?.staleCopies.map((c) => c.nodeId) ?? [];
  if (nodes.length === 0 && vm.staleCopyNodes.length === 0) return vm;
  return { ...vm, staleCopyNodes: nodes };
}

/**
 * Whether a node holds a VM, as the stale copy remover asks it: only a READY
 * node's report is evidence; a silent node's last one may list a VM that has
 * left it since (a 30-minute chaos run removed a VM's only copy that way).
 */
export function reportedHolding(
  inventory: Pick<Inventory, "getNode">,
): (nodeId: string, vmId: string, signal: AbortSignal) => Promise<boolean> {
  return async (nodeId, vmId, signal) => {
    const node = await inventory.getNode(nodeId, signal);
    return node?.summary.readiness === NodeReadiness.READY && node.vms.some((v) => v.id === vmId);
  };
}

/** Whether a node is READY, as the stale copy remover asks it before sending a removal. */
export function reportedReady(
  inventory: Pick<Inventory, "getNode">,
): (nodeId: string, signal: AbortSignal) => Promise<boolean> {
  return async (nodeId, signal) =>
    (await inventory.getNode(nodeId, signal))?.summary.readiness === NodeReadiness.READY;
}
