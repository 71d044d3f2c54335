import type { Clock } from "../core/index.js";
import {
  type CallScope,
  defineService,
  invalid,
  isLabelValue,
  type LabelSelector,
  matchesLabels,
  paginate,
  parseLabelSelector,
  principalOf,
  RpcError,
  type ServiceBinding,
  sameNode,
  scopeOf,
} from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import type { VMRef } from "../gen/debvisor/v1/migration_pb.js";
import {
  type ListVmsRequest,
  type SetVmLabelsRequest,
  type VmInfo,
  VmService,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import type { Inventory } from "./inventory.js";
import { filteredScope } from "./tenancy.js";
import { createVmLifecycle, VM_LIFECYCLE_POLICIES } from "./vm-lifecycle.js";
import { listedVms, observedVm } from "./vm-view.js";
import type { WatchQuota } from "./watch-quota.js";

/** Dependencies of the VmService handlers. */
export interface VmServiceDeps {
  readonly inventory: Inventory;
  /** How long a NOT_READY node takes to fence itself: its VMs then show as stopped (see observedVm). */
  readonly fenceDelayMs?: number;
  /** Where VM records and lifecycle operations live (the inventory's store). */
  readonly store: KvStore;
  readonly clock: Clock;
  /** Placement of new VMs, as migration planning counts capacity. */
  readonly cpuOvercommit?: number;
  readonly memoryOvercommit?: number;
  /** Open watches per caller (WatchOperation), shared with the daemon's other watches. */
  readonly quota?: WatchQuota;
  /** The cluster's storage, asked whether a new disk exists already. */
  readonly storage?: StorageDriver;
}

/**
 * VmService: the VM inventory as the nodes last reported it, with the
 * tenants the control plane assigned, and the VMs' lifecycle (vm-lifecycle.ts).
 */
export function createVmService(deps: VmServiceDeps): ServiceBinding {
  const { inventory, fenceDelayMs } = deps;
  /** The VMs as the API shows them: a down node's as unknown, then stopped, at their placement. */
  const vmsNow = (signal: AbortSignal) => listedVms(inventory, fenceDelayMs, signal);
  /** One VM as {@link vmsNow} shows it, looking at no other VM or node. */
  const vmNow = async (vmId: string, signal: AbortSignal) => {
    const vm = await inventory.findVm(vmId, signal);
    if (vm === undefined) return undefined;
    const node = await inventory.getNode(vm.nodeId?.id ?? "", signal);
    const placed = (await inventory.vmRecords.all()).get(vmId)?.rec.nodeId;
    return observedVm(vm, node?.summary, fenceDelayMs, placed);
  };
  return defineService(
    VmService,
    {
      listVms: {
        permission: "vm:list",
        mutating: false,
        validate: (req: ListVmsRequest) => parseLabelSelector(req.selector),
      },
      getVm: {
        permission: "vm:list",
        mutating: false,
        target: { kind: "vm", id: (req: VMRef) => req.vmId },
      },
      setVmTenant: { permission: "vm:assign", mutating: true, target: { kind: "cluster" } },
      // A VM's labels are its tenant's to set (a vm target), never a report's.
      setVmLabels: {
        permission: "vm:label",
        mutating: true,
        target: { kind: "vm", id: (req: SetVmLabelsRequest) => req.vmId },
        validate: (req: SetVmLabelsRequest) => {
          for (const [k, v] of Object.entries(req.set))
            if (!isLabelValue(v))
              throw invalid(
                `set["${k}"]: "${v}" is not a label value (up to 63 letters, digits, '-', '_' or '.', alphanumeric at both ends)`,
              );
        },
      },
      ...VM_LIFECYCLE_POLICIES,
    },
    {
      ...createVmLifecycle(deps),
      async listVms(req, ctx) {
        const scope = filteredScope(scopeOf(ctx), req.tenant);
        const selector = parseLabelSelector(req.selector);
        const vms = (await vmsNow(ctx.signal)).filter((vm) => vmMatches(vm, req, scope, selector));
        const page = paginate(vms, (vm) => vm.id, req.pageSize, req.pageToken);
        return { vms: page.items, nextPageToken: page.nextPageToken };
      },
      async getVm(req, ctx) {
        // Authorization already answered for a VM the caller may not see (like a missing one).
        const vm = await vmNow(req.vmId, ctx.signal);
        if (vm === undefined) throw new RpcError("VM_NOT_FOUND");
        return vm;
      },
      async setVmLabels(req, ctx) {
        const updated = await inventory.setLabels(req.vmId, req.set, req.remove, ctx.signal);
        // As listed (a down node's VM unknown or stopped); a VM only recorded, as recorded.
        return (await vmNow(req.vmId, ctx.signal)) ?? updated;
      },
      async setVmTenant(req, ctx) {
        // Which tenant a VM belongs to is the cluster's to say (a cluster target: never a
        // tenant-confined caller's), never a report's.
        return inventory.assignTenant(req.vmId, req.tenant, principalOf(ctx).id, ctx.signal);
      },
    },
  );
}

/** Whether a VM is in a ListVms answer: visible to `scope` and passing its filters. */
export function vmMatches(
  vm: VmInfo,
  req: ListVmsRequest,
  scope: CallScope,
  selector: LabelSelector,
): boolean {
  const nodeId = req.nodeId?.id ?? "";
  return (
    scope.canSee(vm.tenant) &&
    (nodeId === "" || sameNode(vm.nodeId?.id ?? "", nodeId)) &&
    (req.state === VmState.UNSPECIFIED || vm.state === req.state) &&
    matchesLabels(selector, vm.labels)
  );
}
