// StartVm, StopVm, RebootVm and DeleteVm: each writes the VM's new desired
// state (for a managed VM) with an operation for the node that serves it.
import { type CallContext, RpcError } from "../core/index.js";
import { DEFAULT_STOP_TIMEOUT_MS } from "../drivers/index.js";
import {
  type DeleteVmRequest,
  type RebootVmRequest,
  type StartVmRequest,
  type StopVmRequest,
  VmOperationKind,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import type { VmOperationSubmitter } from "./vm-operation-submitter.js";
import { type VersionedVm, vmRecord } from "./vm-records.js";

/** The record with a new desired state, for a managed VM (an unmanaged one has none to keep). */
const desired = (prev: VersionedVm | undefined, state: VmState, operationId: string) =>
  prev?.rec.managed === true
    ? vmRecord(prev.rec.id, prev, { desiredState: state, lastOperationId: operationId })
    : undefined;
const stopParams = (req: { force: boolean; timeoutMs: number }) => ({
  force: String(req.force),
  timeout_ms: String(req.timeoutMs || DEFAULT_STOP_TIMEOUT_MS),
});

/** The start, stop, reboot and delete handlers of the lifecycle, over `submitter`. */
export function createVmStateChanges(submitter: VmOperationSubmitter) {
  const { submit } = submitter;
  return {
    startVm: (req: StartVmRequest, ctx: CallContext) =>
      submit(ctx, VmOperationKind.START, req.vmId, req.requestId, ({ prev }, id) => ({
        params: {},
        vm: desired(prev, VmState.RUNNING, id),
        prev,
      })),
    stopVm: (req: StopVmRequest, ctx: CallContext) =>
      submit(ctx, VmOperationKind.STOP, req.vmId, req.requestId, ({ prev }, id) => ({
        params: stopParams(req),
        vm: desired(prev, VmState.STOPPED, id),
        prev,
      })),
    rebootVm: (req: RebootVmRequest, ctx: CallContext) =>
      submit(ctx, VmOperationKind.REBOOT, req.vmId, req.requestId, ({ prev }, id) => ({
        params: stopParams(req),
        vm: desired(prev, VmState.RUNNING, id),
        prev,
      })),
    deleteVm: (req: DeleteVmRequest, ctx: CallContext) =>
      submit(
        ctx,
        VmOperationKind.DELETE,
        req.vmId,
        req.requestId,
        ({ reported, prev, nodeId, off }, id) => {
          // Refused here already, changing nothing; the node refuses it too (it may know better).
          if (reported?.state === VmState.RUNNING && !req.force) throw new RpcError("VM_RUNNING");
          // The record goes when the node has undefined it (see the operation settler). Until
          // then a VM asked to go away should not run: desired STOPPED, so a failover or HA
          // restore does not bring it back elsewhere while the delete waits on a cut-off node.
          // A node said to be off (or gone) would keep it waiting for good: the delete is
          // decided here, nothing is sent, the record goes, and a copy the node still
          // holds shows as unmanaged should it come back (the operator said it was off;
          // Kubernetes' out-of-service taint deletes a node's pods the same way).
          return {
            params: { force: String(req.force) },
            vm: desired(prev, VmState.STOPPED, id),
            prev,
            decided:
              off !== undefined
                ? {
                    message: `${nodeId} is out of service: nothing was sent to it; the vm's record is removed, and a copy still on ${nodeId} shows as unmanaged if the node comes back`,
                  }
                : undefined,
          };
        },
      ),
  };
}
