// CreateVm: disks checked, a node chosen and its capacity reserved, and the
// operation, the VM's record and the reservation written in one transaction.
import { type CallContext, principalOf, RpcError, scopeOf } from "../core/index.js";
import { domainSpecParams } from "../drivers/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type CreateVmRequest,
  type VmOperation,
  VmOperationKind,
  type VmSpec,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import { LOST, retryWhileLost } from "../store/index.js";
import { createHolder, unreportedCreates } from "./create-reservations.js";
import { createDatasetAccess } from "./dataset-access.js";
import { placeVm } from "./vm-create-placement.js";
import { claimDisks, createVmDiskCheck, refuseStoredDisks } from "./vm-disk-check.js";
import type { VmLifecycleShared } from "./vm-lifecycle.js";
import type { VmLocator } from "./vm-locator.js";
import type { VmOperationSubmitter } from "./vm-operation-submitter.js";
import { type VmOperationRequest, vmOperationId } from "./vm-operations.js";
import { firstGeneration, generationFloor } from "./vm-placement.js";
import { type VersionedVm, vmRecord } from "./vm-records.js";
import { domainSpecOf } from "./vm-spec.js";

/** Place-and-reserve rounds of one create before it gives up with CONFLICT (concurrent creates race for the same room). */
const CREATE_ATTEMPTS = 32;

/** The CreateVm handler of the lifecycle. */
export function createVmCreation(
  shared: VmLifecycleShared,
  locator: VmLocator,
  submitter: VmOperationSubmitter,
) {
  const { deps, migrations } = shared;
  const { inventory, store, clock } = deps;
  const { refuseExisting } = locator;
  const { written } = submitter;
  const checkDisks = createVmDiskCheck({
    inventory,
    datasets: createDatasetAccess({ inventory, store }),
  });

  /** The create's operation, its VM's record and its capacity reservation, to write at once. */
  function created(
    req: CreateVmRequest,
    ctx: CallContext,
    tenant: string,
    id: string,
    prev: VersionedVm | undefined,
    nodeId: string,
    also: VmOperationRequest["also"],
    revision: number,
  ): VmOperationRequest {
    const spec = req.spec as VmSpec;
    const by = principalOf(ctx).id;
    const now = BigInt(clock.now());
    const rec: VmRecord = vmRecord(req.vmId, prev, {
      lastOperationId: id,
      tenant,
      tenantSetBy: by,
      tenantSetAtMs: now,
      nodeId,
      // A creation is a change of placement: a new fencing generation, above any the id had.
      generation: firstGeneration(revision, prev?.rec),
      // A new VM no node has reported: none may take it before its node does.
      awaitingReport: true,
      confirmedNode: "",
      confirmedGeneration: 0n,
      spec,
      managed: true,
      managedBy: by,
      managedAtMs: now,
      desiredState: req.start ? VmState.RUNNING : VmState.STOPPED,
    });
    const params = { ...domainSpecParams(domainSpecOf(req.vmId, spec)), start: String(req.start) };
    return {
      id,
      kind: VmOperationKind.CREATE,
      vmId: req.vmId,
      nodeId,
      tenant,
      params,
      requestedBy: by,
      requestId: req.requestId,
      vm: rec,
      vmRevision: prev?.rev ?? 0,
      generation: rec.generation,
      also,
    };
  }

  return {
    async createVm(req: CreateVmRequest, ctx: CallContext): Promise<VmOperation> {
      const spec = req.spec;
      if (spec === undefined) throw new RpcError("INVALID_ARGUMENT", { message: "spec: required" });
      const tenant = ctx.tenant ?? req.tenant;
      // First, so that a client retrying its create hears VM_EXISTS, not that its own new
      // disk exists (checked again below, in the loop that writes).
      await refuseExisting(req.vmId, tenant, ctx.tenant !== undefined, ctx.signal);
      await checkDisks(req, tenant, ctx.tenant !== undefined, ctx.signal);
      const id = vmOperationId(req.vmId, req.requestId, ctx.tenant); // scoped, as in submit()
      // Placement and the capacity it takes are one compare-and-swap on the node's
      // reservations: of concurrent creates, only those that still fit are written.
      return retryWhileLost(CREATE_ATTEMPTS, async () => {
        const prev = await refuseExisting(req.vmId, tenant, ctx.tenant !== undefined, ctx.signal);
        const reserved = await migrations.reserved(ctx.signal);
        const nodes = await inventory.listNodes(ctx.signal);
        const placement = placeVm({
          spec,
          nodes,
          reserved: reserved.byNode,
          pending: await unreportedCreates(store, inventory, reserved.holders, ctx.signal),
          target: req.nodeId?.id ?? "",
          cpuOvercommit: deps.cpuOvercommit ?? 4,
          memoryOvercommit: deps.memoryOvercommit ?? 1,
          confined: !scopeOf(ctx).clusterWide,
        });
        const hold = await migrations.hold(
          placement.nodeId,
          { id: createHolder(id), vcpus: spec.vcpus, memoryBytes: spec.memoryBytes },
          reserved.revisions.get(placement.nodeId) ?? 0,
          ctx.signal,
        );
        if (hold === undefined) return LOST;
        try {
          // On the node chosen: a ZFS dataset is that node's.
          await refuseStoredDisks(deps.storage, req, placement.nodeId, ctx.signal);
          const revision = await generationFloor(store, ctx.signal);
          const claims = await claimDisks(store, req, tenant, ctx.tenant !== undefined, ctx.signal);
          const also = [hold, ...claims];
          const request = created(req, ctx, tenant, id, prev, placement.nodeId, also, revision);
          const op = (await written(request, ctx.signal)).operation;
          ctx.log.info(
            { vm: req.vmId, node: placement.nodeId, why: placement.reason },
            "vm placed",
          );
          return op;
        } catch (err) {
          if (!(err instanceof RpcError && err.reason === "CONFLICT")) throw err;
        }
        return LOST;
      });
    },
  };
}
