// AdoptVm: an unmanaged VM a node reports becomes managed, in a tenant, with
// the state it has now as the state wanted.
import { type CallContext, principalOf, RpcError } from "../core/index.js";
import { type AdoptVmRequest, type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { VmLifecycleShared } from "./vm-lifecycle.js";
import { vmRecord } from "./vm-records.js";
import { specOfReported } from "./vm-spec.js";

/** The AdoptVm handler of the lifecycle. */
export function createVmAdoption(shared: VmLifecycleShared) {
  const { deps, agentOps } = shared;
  const { inventory, store, clock } = deps;

  /**
   * VM_OPERATION_OPEN while an operation on `vmId` is still open on `nodeId`.
   * An adoption records the state the node reports now as the state wanted:
   * a stop still waiting (the node cut off) would, once run, leave the VM
   * stopped with RUNNING wanted, which a failover would undo.
   */
  async function refuseOpenOperation(vmId: string, nodeId: string, ctx: CallContext) {
    if (nodeId === "") return;
    const open = (await agentOps.open(nodeId, ctx.signal)).find((r) => r.dispatch?.vmId === vmId);
    if (open !== undefined)
      throw new RpcError("VM_OPERATION_OPEN", {
        message: `operation ${open.dispatch?.operationId} on the vm has not ended: adopt it once it has (hvctl vm operation ${open.dispatch?.operationId} --wait)`,
      });
  }

  return {
    async adoptVm(req: AdoptVmRequest, ctx: CallContext): Promise<VmInfo> {
      const reported = await inventory.findVm(req.vmId, ctx.signal);
      if (reported === undefined) throw new RpcError("VM_NOT_FOUND");
      const prev = (await inventory.vmRecords.all()).get(req.vmId);
      if (prev?.rec.managed === true) throw new RpcError("VM_MANAGED");
      await refuseOpenOperation(req.vmId, prev?.rec.nodeId || (reported.nodeId?.id ?? ""), ctx);
      const by = principalOf(ctx).id;
      const now = BigInt(clock.now());
      const rec = vmRecord(req.vmId, prev, {
        tenant: req.tenant,
        tenantSetBy: by,
        tenantSetAtMs: now,
        nodeId: prev?.rec.nodeId || (reported.nodeId?.id ?? ""),
        spec: specOfReported(reported),
        managed: true,
        managedBy: by,
        managedAtMs: now,
        desiredState: reported.state === VmState.RUNNING ? VmState.RUNNING : VmState.STOPPED,
      });
      const w = inventory.vmRecords.write(rec, prev?.rev ?? 0);
      const txn = await store.txn(
        { compares: [w.compare], success: [w.op] },
        { signal: ctx.signal },
      );
      if (!txn.succeeded) throw new RpcError("CONFLICT");
      inventory.vmRecords.remember(rec, txn.revision);
      return { ...reported, tenant: rec.tenant, managed: true, desiredState: rec.desiredState };
    },
  };
}
