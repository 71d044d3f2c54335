import {
  defineService,
  paginate,
  principalOf,
  RpcError,
  type ServiceBinding,
} from "../core/index.js";
import { VmService, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";
import { visibleTo } from "./tenancy.js";

/** Dependencies of the VmService handlers. */
export interface VmServiceDeps {
  readonly inventory: Inventory;
}

/** VmService: the VM inventory as the nodes last reported it, with the tenants the control plane assigned. */
export function createVmService(deps: VmServiceDeps): ServiceBinding {
  const { inventory } = deps;
  return defineService(
    VmService,
    {
      listVms: { permission: "vm:list", mutating: false },
      getVm: { permission: "vm:list", mutating: false },
      setVmTenant: { permission: "vm:assign", mutating: true },
    },
    {
      async listVms(req, ctx) {
        const nodeId = req.nodeId?.id ?? "";
        const vms = (await inventory.listVms(ctx.signal)).filter(
          (vm) =>
            visibleTo(vm, ctx.tenant) &&
            (nodeId === "" || vm.nodeId?.id === nodeId) &&
            (req.state === VmState.UNSPECIFIED || vm.state === req.state),
        );
        const page = paginate(vms, (vm) => vm.id, req.pageSize, req.pageToken);
        return { vms: page.items, nextPageToken: page.nextPageToken };
      },
      async getVm(req, ctx) {
        const vm = (await inventory.listVms(ctx.signal)).find((v) => v.id === req.vmId);
        // Another tenant's VM answers exactly like a missing one: no existence leak.
        if (vm === undefined || !visibleTo(vm, ctx.tenant)) throw new RpcError("VM_NOT_FOUND");
        return vm;
      },
      async setVmTenant(req, ctx) {
        // Which tenant a VM belongs to is the cluster's to say: never a tenant's, never a report's.
        if (ctx.tenant !== undefined)
          throw new RpcError("PERMISSION_DENIED", {
            cause: new Error("tenant-confined callers cannot assign VMs to tenants"),
          });
        return inventory.assignTenant(req.vmId, req.tenant, principalOf(ctx).id, ctx.signal);
      },
    },
  );
}
