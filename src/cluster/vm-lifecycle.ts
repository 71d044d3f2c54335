import {
  type CallContext,
  type Clock,
  type MethodPolicy,
  principalOf,
  RpcError,
  sameNode,
  scopeOf,
} from "../core/index.js";
import { DEFAULT_STOP_TIMEOUT_MS, domainSpecParams } from "../drivers/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import {
  type AdoptVmRequest,
  type CreateVmRequest,
  type DeleteVmRequest,
  type GetOperationRequest,
  type RebootVmRequest,
  type StartVmRequest,
  type StopVmRequest,
  type VmInfo,
  type VmOperation,
  VmOperationKind,
  type VmSpec,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import { createAgentOperations, waitingGuardKey } from "./agent-operations.js";
import { createHolder, unreportedCreates } from "./create-reservations.js";
import { createDatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { createMigrationRecords } from "./migration-records.js";
import { endLeftOperations } from "./operations-left.js";
import { placeVm } from "./vm-create-placement.js";
import { claimDisks, createVmDiskCheck } from "./vm-disk-check.js";
import {
  createVmOperations,
  type VmOperationRequest,
  vmOperationId,
  vmOperationOf,
} from "./vm-operations.js";
import { firstGeneration, generationFloor } from "./vm-placement.js";
import { type VersionedVm, vmRecord } from "./vm-records.js";
import { domainSpecOf, specOfReported } from "./vm-spec.js";
import type { WatchQuota } from "./watch-quota.js";

/** Dependencies of the VM lifecycle. */
export interface VmLifecycleDeps {
  readonly inventory: Inventory;
  readonly store: KvStore;
  readonly clock: Clock;
  /** vCPUs placeable per core and memory per byte, as migration planning uses them. */
  readonly cpuOvercommit?: number;
  readonly memoryOvercommit?: number;
  /** Open watches per caller, shared with every other watch: WatchOperation counts too. */
  readonly quota?: WatchQuota;
}

/**
 * Operations of one VM that may wait at once for its node when the node is
 * not ready: they are never removed while they wait, and all run once it is
 * back. A few are a careful caller's; more are a flood.
 */
const WAITING_PER_VM = 16;

/** Place-and-reserve rounds of one create before it gives up with CONFLICT (concurrent creates race for the same room). */
const CREATE_ATTEMPTS = 32;

const vmTarget = { kind: "vm" as const, id: (req: { vmId: string }) => req.vmId };
const opTarget = {
  kind: "vm-operation" as const,
  id: (req: GetOperationRequest) => req.operationId,
};

/** The policies of the lifecycle methods of VmService. */
export const VM_LIFECYCLE_POLICIES = {
  createVm: {
    permission: "vm:create",
    mutating: true,
    target: { kind: "tenant", id: (req: CreateVmRequest) => req.tenant },
  },
  startVm: { permission: "vm:start", mutating: true, target: vmTarget },
  stopVm: { permission: "vm:stop", mutating: true, target: vmTarget },
  rebootVm: { permission: "vm:reboot", mutating: true, target: vmTarget },
  deleteVm: { permission: "vm:delete", mutating: true, target: vmTarget },
  // Which tenant a VM belongs to is the cluster's to say (as SetVmTenant).
  adoptVm: { permission: "vm:adopt", mutating: true, target: { kind: "cluster" } },
  getOperation: { permission: "vm:list", mutating: false, target: opTarget },
  watchOperation: { permission: "vm:list", mutating: false, target: opTarget },
} satisfies Record<string, MethodPolicy>;

/**
 * The VM lifecycle: each call writes the VM's desired state and an
 * operation in one store transaction and answers the operation at once;
 * whoever serves the VM's node runs it (its agent, or this control plane's
 * local operation runner). Authorization has already answered for VMs and
 * operations the caller may not see, exactly like missing ones.
 */
export function createVmLifecycle(deps: VmLifecycleDeps) {
  const { inventory, store, clock } = deps;
  const ops = createVmOperations(store, clock);
  const agentOps = createAgentOperations(store, clock);
  const migrations = createMigrationRecords(store);
  const checkDisks = createVmDiskCheck({
    inventory,
    datasets: createDatasetAccess({ inventory, store }),
  });

  /** The VM's node and record: as reported, else as recorded (created, not yet reported). */
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

  /** VM_EXISTS for a VM a node reports or a managed record holds; else its record, if any. */
  async function refuseExisting(vmId: string, signal: AbortSignal) {
    if ((await inventory.findVm(vmId, signal)) !== undefined) throw new RpcError("VM_EXISTS");
    const prev = (await inventory.vmRecords.all()).get(vmId);
    if (prev?.rec.managed === true) throw new RpcError("VM_EXISTS");
    return prev;
  }

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

  /** Writes the operation with the record change; the record is read again if it moved meanwhile. */
  async function submit(
    ctx: CallContext,
    kind: VmOperationKind,
    vmId: string,
    requestId: string,
    build: (
      at: Awaited<ReturnType<typeof locate>>,
      operationId: string,
    ) => {
      params: Record<string, string>;
      vm: VmOperationRequest["vm"];
      prev: VersionedVm | undefined;
      decided?: VmOperationRequest["decided"];
    },
  ): Promise<VmOperation> {
    // Scoped: a key another tenant's caller picked never names this caller's operation.
    const id = vmOperationId(vmId, requestId, ctx.tenant);
    for (let attempt = 0; attempt < 4; attempt++) {
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
    }
    throw new RpcError("CONFLICT");
  }

  async function written(req: VmOperationRequest, signal: AbortSignal) {
    const out = await ops.submit(req, signal);
    if (out.written && req.vm !== undefined) inventory.vmRecords.remember(req.vm, out.revision);
    return out;
  }

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

  /** The record with a new desired state, for a managed VM (an unmanaged one has none to keep). */
  const desired = (prev: VersionedVm | undefined, state: VmState, operationId: string) =>
    prev?.rec.managed === true
      ? vmRecord(prev.rec.id, prev, { desiredState: state, lastOperationId: operationId })
      : undefined;
  const stopParams = (req: { force: boolean; timeoutMs: number }) => ({
    force: String(req.force),
    timeout_ms: String(req.timeoutMs || DEFAULT_STOP_TIMEOUT_MS),
  });

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
    async createVm(req: CreateVmRequest, ctx: CallContext): Promise<VmOperation> {
      const spec = req.spec;
      if (spec === undefined) throw new RpcError("INVALID_ARGUMENT", { message: "spec: required" });
      const tenant = ctx.tenant ?? req.tenant;
      // First, so that a client retrying its create hears VM_EXISTS, not that its own new
      // disk exists (checked again below, in the loop that writes).
      await refuseExisting(req.vmId, ctx.signal);
      await checkDisks(req, tenant, ctx.tenant !== undefined, ctx.signal);
      const id = vmOperationId(req.vmId, req.requestId, ctx.tenant); // scoped, as in submit()
      // Placement and the capacity it takes are one compare-and-swap on the node's
      // reservations: of concurrent creates, only those that still fit are written.
      for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
        const prev = await refuseExisting(req.vmId, ctx.signal);
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
        if (hold === undefined) continue;
        try {
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
      }
      throw new RpcError("CONFLICT");
    },
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
    async getOperation(req: GetOperationRequest, ctx: CallContext): Promise<VmOperation> {
      const op = await ops.get(req.operationId, ctx.signal);
      if (op === undefined) throw new RpcError("OPERATION_NOT_FOUND");
      return vmOperationOf(op.index, op.record);
    },
    async *watchOperation(req: GetOperationRequest, ctx: CallContext) {
      // A stream held open on an operation that does not end (its node away) is a watch.
      const release = deps.quota?.open(ctx);
      try {
        yield* ops.follow(req.operationId, ctx.signal);
      } finally {
        release?.();
      }
    },
  };
}
