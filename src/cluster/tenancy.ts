import {
  type CallScope,
  RpcError,
  systemClock,
  type TargetKind,
  type TargetResolver,
} from "../core/index.js";
import type { NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import { createDatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { createMigrationRecords } from "./migration-records.js";
import { scopedJobId, tenantOfJobId } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import { createVmOperations } from "./vm-operations.js";

/** Whether a caller acting in `tenant` (undefined: cluster-wide) may see `vm`. */
export function visibleTo(vm: VmInfo, tenant: string | undefined): boolean {
  return tenant === undefined || vm.tenant === tenant;
}

/** Only the VMs the call's scope may see, for lists that embed VMs (node health, node detail). */
export function visibleVms(vms: readonly VmInfo[], scope: CallScope): VmInfo[] {
  return scope.clusterWide ? [...vms] : vms.filter((vm) => scope.canSee(vm.tenant));
}

/**
 * A node summary whose health and VM counts cover only the VMs the scope may
 * see. The node's own measurements (CPU load, memory and disk in use) are the
 * whole node's and cannot be split by tenant, so a caller that is not
 * cluster-wide gets none (0) and `usage_hidden`, so that 0 is not read as an idle node.
 */
export function scopeNode(node: NodeSummary, scope: CallScope): NodeSummary {
  if (scope.clusterWide) return node;
  const vms = visibleVms(node.health?.vms ?? [], scope);
  // The counts cover only what the tenant may see: totals would tell it
  // that other tenants' VMs are there, and how big they are. So would the
  // measurements: memory in use times capacity is every tenant's running VMs' memory.
  let vcpus = 0;
  let memory = 0n;
  for (const vm of vms) {
    vcpus += vm.vcpus;
    memory += vm.memoryBytes;
  }
  return {
    ...node,
    health:
      node.health === undefined
        ? undefined
        : { ...node.health, vms, cpuLoad: 0, memUsedPct: 0, diskUsedPct: 0 },
    vmCount: vms.length,
    vcpusAllocated: vcpus,
    memoryAllocatedBytes: memory,
    usageHidden: node.health !== undefined,
  };
}

/**
 * The scope a list or watch shows once its `tenant` filter applies: the
 * call's own scope when `tenant` is empty; for a cluster-wide caller,
 * exactly what a caller confined to that tenant would see; a caller that is
 * not cluster-wide is refused (TENANT_FILTER_DENIED) whatever tenant it
 * names, so the answer says nothing about other tenants.
 */
export function filteredScope(scope: CallScope, tenant: string): CallScope {
  if (tenant === "") return scope;
  if (!scope.clusterWide) throw new RpcError("TENANT_FILTER_DENIED");
  return { tenant, clusterWide: false, canSee: (t) => t === tenant };
}

/** One tenant, or none (""), as a resolver answers it. */
const owners = (tenant: string): string[] => (tenant === "" ? [] : [tenant]);

/**
 * The authorization stage's resolvers for the cluster's targets: a VM's
 * tenant from the inventory, a dataset's from the VMs whose disk it is and
 * the record of a dataset the control plane created, a migration's, a
 * replication job's and a VM operation's from their records. Each answers undefined for a
 * target that does not exist (datasets never do: the backend knows).
 */
export function createTargetResolvers(deps: {
  inventory: Inventory;
  store: KvStore;
}): Partial<Record<TargetKind, TargetResolver>> {
  const datasets = createDatasetAccess(deps);
  const migrations = createMigrationRecords(deps.store);
  const jobs = createReplicationJobs(deps.store);
  const isDataset = (d: unknown): d is DatasetRef =>
    typeof d === "object" && d !== null && "name" in d && "backend" in d;
  // A name the store cannot even hold (bad input, refused later by validation) is a missing target.
  const safe =
    (resolve: TargetResolver): TargetResolver =>
    (id, signal, callerTenants) =>
      resolve(id, signal, callerTenants).catch((err: unknown) => {
        if (signal.aborted) throw err;
        return undefined;
      });
  const operations = createVmOperations(deps.store, systemClock);
  const resolvers: Partial<Record<TargetKind, TargetResolver>> = {
    async vm(id, signal) {
      if (typeof id !== "string" || id === "") return undefined;
      const vm = await deps.inventory.findVm(id, signal);
      if (vm !== undefined) return owners(vm.tenant);
      // Created and not reported yet: the control plane's record says whose it is.
      const rec = (await deps.inventory.vmRecords.all()).get(id)?.rec;
      return rec?.managed === true ? owners(rec.tenant) : undefined;
    },
    async "vm-operation"(id, signal) {
      if (typeof id !== "string" || id === "") return undefined;
      const op = await operations.get(id, signal);
      return op === undefined ? undefined : owners(op.index.tenant);
    },
    async dataset(ref, signal) {
      return isDataset(ref) ? datasets.tenants(ref, signal) : undefined;
    },
    async migration(id, signal) {
      if (typeof id !== "string" || id === "") return undefined;
      const rec = await migrations.get(id, signal);
      return rec === undefined ? undefined : owners(rec.tenant);
    },
    async "replication-job"(id, signal, callerTenants) {
      if (typeof id !== "string" || id === "") return undefined;
      // A tenant's own job ids live in its space (`<tenant>:<id>`), found first.
      for (const t of callerTenants)
        if ((await jobs.get(scopedJobId(t, id), signal)) !== undefined) return [t];
      const dataset = (await jobs.get(id, signal))?.job.plan?.dataset;
      if (dataset === undefined) return undefined;
      // A job in one tenant's space on a dataset another owns now (its VM given away) is
      // neither's: only cluster-wide callers see it, and its runs' events are theirs.
      // Answered as the dataset's, its new owner was told it exists (PERMISSION_DENIED)
      // and shown its runs' events under the old tenant's id.
      const space = tenantOfJobId(id);
      const owners = await datasets.tenants(dataset, signal);
      return space === "" ? owners : owners.filter((t) => t === space);
    },
  };
  return Object.fromEntries(
    Object.entries(resolvers).map(([kind, r]) => [kind, safe(r as TargetResolver)]),
  );
}

/**
 * The tenant of an event's object when the code that saw it did not know it
 * (a replication run): the single owner the target resolvers find (a
 * replication job's: its dataset's); "" (cluster-wide callers only) when
 * there is none or more than one.
 */
export function createEventTenants(deps: {
  inventory: Inventory;
  store: KvStore;
}): (kind: string, id: string, signal: AbortSignal) => Promise<string> {
  const resolvers = createTargetResolvers(deps);
  const byKind: Record<string, TargetResolver | undefined> = {
    vm: resolvers.vm,
    migration: resolvers.migration,
    replication: resolvers["replication-job"],
  };
  return async (kind, id, signal) => {
    // A replication run is about its dataset: filed under the dataset's owner while its
    // job is in that owner's space (or in none); a job of one tenant's space on a dataset
    // given to another since is neither's, so its events are the cluster's. A job deleted
    // since (or a store that did not answer) leaves no owner to tell: the event is the
    // cluster's, not the tenant's its id names (the disk may be another's now).
    const owners = (await byKind[kind]?.(id, signal, [])) ?? [];
    return owners.length === 1 ? (owners[0] ?? "") : "";
  };
}
