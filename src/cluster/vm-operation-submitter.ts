// How a lifecycle call on an existing VM is written: the operation and the
// record change in one transaction, refused while a migration holds the VM
// or too many operations already wait for a node that is not ready.
import { type CallContext, principalOf, RpcError, sameNode } from "../core/index.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmOperation, VmOperationKind } from "../gen/debvisor/v1/vm_pb.js";
import { LOST, retryWhileLost } from "../store/index.js";
import { waitingGuardKey } from "./agent-operations.js";
import { endLeftOperations } from "./operations-left.js";
import type { VmLifecycleShared } from "./vm-lifecycle.js";
import type { VmLocation, VmLocator } from "./vm-locator.js";
import { type VmOperationRequest, vmOperationId } from "./vm-operations.js";
import type { VersionedVm } from "./vm-records.js";

/**
 * Operations of one VM that may wait at once for its node when the node is
 * not ready: they are never removed while they wait, and all run once it is
 * back. A few are a careful caller's; more are a flood.
 */
const WAITING_PER_VM = 16;

/** What a call builds from the located VM: its parameters, the record to write, a decision. */
export interface VmOperationBuild {
  params: Record<string, string>;
  vm: VmOperationRequest["vm"];
  prev: VersionedVm | undefined;
  decided?: VmOperationRequest["decided"];
}

/** Writes lifecycle operations. */
export interface VmOperationSubmitter {
  /** Writes the operation with the record change; the record is read again if it moved meanwhile. */
  submit(
    ctx: CallContext,
    kind: VmOperationKind,
    vmId: string,
    requestId: string,
    build: (at: VmLocation, operationId: string) => VmOperationBuild,
  ): Promise<VmOperation>;
  /** Writes one operation request, remembering the record it wrote. */
  written(
    req: VmOperationRequest,
    signal: AbortSignal,
  ): Promise<{ written: boolean; operation: VmOperation; revision: number }>;
}

/** Builds the lifecycle's {@link VmOperationSubmitter}. */
export function createVmOperationSubmitter(
  shared: VmLifecycleShared,
  locator: VmLocator,
): VmOperationSubmitter {
  const { deps, ops, agentOps, migrations } = shared;
  const { inventory, store, clock } = deps;
  const { locate } = locator;

  /**
   * VM_OPERATION_OPEN when {@link WAITING_PER_VM} operations of `vmId` already wait for
   * `nodeId`, which is not ready. Counted only then (a ready node runs them): the count reads
   * the node's operations. A retry of an operation already written is answered, not refused.
   */
  async function refuseFlood(vmId: string, nodeId: string, id: string, ctx: CallContext) {
    const node = await inventory.getNode(nodeId, ctx.signal);
    if (node === undefined || node.summary.readiness === NodeReadiness.READY) return [];
    if ((await ops.get(id, ctx.signal)) !== undefined) return [];
    // Read before the count and compared with the write: calls at once each counted the same
    // waiting operations (an unmanaged VM's have no record to compare), and all were written.
    const guard = waitingGuardKey(nodeId, vmId);
    const seen = (await store.get(guard, { signal: ctx.signal }))?.modRevision ?? 0;
    const open = await agentOps.open(nodeId, ctx.signal);
    const waiting = open.filter((r) => r.dispatch?.vmId === vmId).length;
    if (waiting >= WAITING_PER_VM)
      throw new RpcError("VM_OPERATION_OPEN", {
        message: `${waiting} operations on the vm wait for ${nodeId}, which is not ready: wait for them (hvctl vm operation ID --wait), or, if ${nodeId} is gone for good, cordon it --out-of-service`,
      });
    return [
      {
        compare: { key: guard, modRevision: seen },
        op: { type: "put" as const, key: guard, value: new Uint8Array() },
      },
    ];
  }

  async function submit(
    ctx: CallContext,
    kind: VmOperationKind,
    vmId: string,
    requestId: string,
    build: (at: VmLocation, operationId: string) => VmOperationBuild,
  ): Promise<VmOperation> {
    // Scoped: a key another tenant's caller picked never names this caller's operation.
    const id = vmOperationId(vmId, requestId, ctx.tenant);
    return retryWhileLost(4, async () => {
      const at = await locate(vmId, ctx.signal, kind === VmOperationKind.DELETE);
      const b = build(at, id);
      // A delete decided here (its node said to be off) waits for nothing, and ends the others.
      const guard = b.decided === undefined ? await refuseFlood(vmId, at.nodeId, id, ctx) : [];
      try {
        const out = await written(
          {
            id,
            kind,
            vmId,
            nodeId: at.nodeId,
            tenant: at.prev?.rec.tenant ?? at.reported?.tenant ?? "",
            params: b.params,
            requestedBy: principalOf(ctx).id,
            requestId,
            vm: b.vm,
            vmRevision: b.prev?.rev ?? 0,
            decided: b.decided,
            // One change of a VM at a time: none while a migration or failover of it is in
            // flight (a start sent to the node it is leaving would fail there, the VM
            // arriving stopped with its desired state RUNNING, and nothing would start it).
            compares: [
              migrations.unlocked(vmId),
              ...(b.decided === undefined ? [] : (at.off?.compares ?? [])),
            ],
            also: guard,
            // Compared with the record in the same transaction when the record is written.
            generation:
              at.prev !== undefined && sameNode(at.prev.rec.nodeId, at.nodeId)
                ? at.prev.rec.generation
                : 0n,
          },
          ctx.signal,
        );
        // Decided by this very call (not a retry answered with an earlier one): what else
        // waits on that node for the VM, written before it, never runs.
        if (out.written && b.decided !== undefined) {
          const writtenAt = BigInt(clock.now());
          await endLeftOperations({
            operations: agentOps,
            nodeId: at.nodeId,
            matches: (r) =>
              r.dispatch?.vmId === vmId &&
              r.dispatch.operationId !== id &&
              r.createdAtMs <= writtenAt,
            message: `${vmId} was deleted while ${at.nodeId} was out of service`,
            clock,
            logger: ctx.log,
            signal: ctx.signal,
          });
        }
        return out.operation;
      } catch (err) {
        if (!(err instanceof RpcError && err.reason === "CONFLICT")) throw err;
        // Asked after the write failed: a true retry of an accepted call is answered above.
        if (await migrations.locked(vmId, ctx.signal))
          throw new RpcError("MIGRATION_IN_PROGRESS", {
            message: "a migration or failover of this vm is in flight: wait for it or cancel it",
          });
      }
      return LOST;
    });
  }

  async function written(req: VmOperationRequest, signal: AbortSignal) {
    const out = await ops.submit(req, signal);
    if (out.written && req.vm !== undefined) inventory.vmRecords.remember(req.vm, out.revision);
    return out;
  }

  return { submit, written };
}
