// The VM lifecycle methods of VmService: their policies and the composition
// of their parts (vm-creation.ts, vm-state-changes.ts, vm-adoption.ts over
// vm-locator.ts and vm-operation-submitter.ts), with the operation reads.

import { type CallContext, type Clock, type MethodPolicy, RpcError } from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import type {
  CreateVmRequest,
  GetOperationRequest,
  VmOperation,
} from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import { type AgentOperations, createAgentOperations } from "./agent-operations.js";
import type { Inventory } from "./inventory.js";
import { createMigrationRecords, type MigrationRecords } from "./migration-records.js";
import { createVmAdoption } from "./vm-adoption.js";
import { createVmCreation } from "./vm-creation.js";
import { createVmLocator } from "./vm-locator.js";
import { createVmOperationSubmitter } from "./vm-operation-submitter.js";
import { createVmOperations, type VmOperations, vmOperationOf } from "./vm-operations.js";
import { createVmStateChanges } from "./vm-state-changes.js";
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
  /** The cluster's storage: a new disk must not exist there already (absent: not asked). */
  readonly storage?: StorageDriver;
}

/** What the lifecycle's parts share, built once per lifecycle. */
export interface VmLifecycleShared {
  readonly deps: VmLifecycleDeps;
  readonly ops: VmOperations;
  readonly agentOps: AgentOperations;
  readonly migrations: MigrationRecords;
}

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
  const shared: VmLifecycleShared = {
    deps,
    ops,
    agentOps: createAgentOperations(store, clock),
    migrations: createMigrationRecords(store),
  };
  const locator = createVmLocator(inventory);
  const submitter = createVmOperationSubmitter(shared, locator);

  return {
    ...createVmCreation(shared, locator, submitter),
    ...createVmStateChanges(submitter),
    ...createVmAdoption(shared),
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
