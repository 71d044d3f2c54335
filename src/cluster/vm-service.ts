import { defineService, paginate, RpcError, type ServiceBinding } from "../core/index.js";
import { VmService, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";
import { visibleTo } from "./tenancy.js";
import { observedVms } from "./vm-view.js";

/** Dependencies of the VmService handlers. */
export interface VmServiceDeps {
  readonly inventory: Inventory;
  /** How long a NOT_READY node takes to fence itself: its VMs then show as stopped (see observedVm). */
  readonly fenceDelayMs?: number;
}

/** VmService: the VM inventory as the nodes last reported it. */
export function createVmService(deps: VmServiceDeps): ServiceBinding {
  const { inventory, fenceDelayMs } = deps;
  /** The VMs as the API shows them: a down node's as unknown, then stopped. */
  const vmsNow = async (signal: AbortSignal) =>
    observedVms(await inventory.listVms(signal), await inventory.listNodes(signal), fenceDelayMs);
  return defineService(
    VmService,
    {
      listVms: { permission: "vm:list", mutating: false },
      getVm: { permission: "vm:list", mutating: false },
    },
    {
      async listVms(req, ctx) {
        const nodeId = req.nodeId?.id ?? "";
        const vms = (await vmsNow(ctx.signal)).filter(
          (vm) =>
            visibleTo(vm, ctx.tenant) &&
            (nodeId === "" || vm.nodeId?.id === nodeId) &&
            (req.state === VmState.UNSPECIFIED || vm.state === req.state),
        );
        const page = paginate(vms, (vm) => vm.id, req.pageSize, req.pageToken);
        return { vms: page.items, nextPageToken: page.nextPageToken };
      },
      async getVm(req, ctx) {
        const vm = (await vmsNow(ctx.signal)).find((v) => v.id === req.vmId);
        // Another tenant's VM answers exactly like a missing one: no existence leak.
        if (vm === undefined || !visibleTo(vm, ctx.tenant)) throw new RpcError("VM_NOT_FOUND");
        return vm;
      },
    },
  );
}
