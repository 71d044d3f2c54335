// Where a VM is, for the lifecycle calls: the node that serves it (its
// record's placement over a possibly stale report), whether that node is
// said to be off, and whether an id is already taken.
import { RpcError, sameNode } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Compare } from "../store/index.js";
import type { Inventory } from "./inventory.js";
import type { VersionedVm } from "./vm-records.js";

/** A located VM: what its node reports, its record, the node that serves it. */
export interface VmLocation {
  readonly reported: VmInfo | undefined;
  readonly prev: VersionedVm | undefined;
  readonly nodeId: string;
  /** Only when asked for: what to compare while nobody will run an operation on the node; undefined when somebody will. */
  readonly off: { readonly compares: readonly Compare[] } | undefined;
}

/** Reads of where VMs are, over the inventory. */
export interface VmLocator {
  /** The VM's node and record: as reported, else as recorded (created, not yet reported). VM_NOT_FOUND when neither. */
  locate(vmId: string, signal: AbortSignal, askOff?: boolean): Promise<VmLocation>;
  /**
   * VM_EXISTS for a VM a node reports, a managed record holds, or a record
   * of a tenant other than `tenant` ("" for none) holds, unless that record
   * is no tenant's and the caller is not `confined` to one; else its record,
   * if any.
   */
  refuseExisting(
    vmId: string,
    tenant: string,
    confined: boolean,
    signal: AbortSignal,
  ): Promise<VersionedVm | undefined>;
}

/** Builds the lifecycle's {@link VmLocator}. */
export function createVmLocator(inventory: Inventory): VmLocator {
  async function locate(vmId: string, signal: AbortSignal, askOff = false) {
    const reported = await inventory.findVm(vmId, signal);
    const prev = (await inventory.vmRecords.all()).get(vmId);
    const reportedAt = reported?.nodeId?.id ?? "";
    const placedAt = prev?.rec.nodeId ?? "";
    // The record's placement, where it has one: the node reporting the VM may hold a stale
    // copy (a failover committed, the new node's recover not yet run), which a start sent
    // there, unfenced, would run beside the recovered VM. Named as the node names itself.
    // A record without a report is a VM only once managed (created, not yet reported).
    const placed = placedAt !== "" && (reportedAt !== "" || prev?.rec.managed === true);
    const nodeId =
      !placed || sameNode(placedAt, reportedAt)
        ? reportedAt
        : ((await inventory.getNode(placedAt, signal))?.summary.info?.id?.id ?? placedAt);
    if (nodeId === "") throw new RpcError("VM_NOT_FOUND");
    return { reported, prev, nodeId, off: askOff ? await nodeOff(nodeId, signal) : undefined };
  }

  /**
   * Whether nobody will run an operation on `nodeId`, with what to compare
   * in the operation's transaction while that holds: the node was removed,
   * or the operator has said it is off (cordoned out of service) and it has
   * been NOT_READY past the fence delay, as a failover asks. A node that
   * comes back (a heartbeat, an uncordon) fails the compares.
   */
  async function nodeOff(nodeId: string, signal: AbortSignal) {
    const node = await inventory.readNode(nodeId, signal);
    if (node === undefined) return { compares: [] };
    if (!node.summary.outOfService || !node.liveness.pastFenceDelay) return undefined;
    return { compares: [node.unchanged, ...node.liveness.compares] };
  }

  async function refuseExisting(
    vmId: string,
    tenant: string,
    confined: boolean,
    signal: AbortSignal,
  ) {
    if ((await inventory.findVm(vmId, signal)) !== undefined) throw new RpcError("VM_EXISTS");
    const prev = (await inventory.vmRecords.all()).get(vmId);
    if (prev?.rec.managed === true) throw new RpcError("VM_EXISTS");
    // A record of an unmanaged VM no node lists now (shut off, its node away) is still that
    // VM's: created over, another tenant took it, its labels and disks, and its node's next
    // report confirmed the placement. A create never moves a record from one tenant to
    // another; one no tenant holds (the cluster's) only a cluster-wide caller creates over.
    const held = prev?.rec.tenant;
    if (held !== undefined && held !== tenant && (confined || held !== ""))
      throw new RpcError("VM_EXISTS");
    return prev;
  }

  return { locate, refuseExisting };
}
