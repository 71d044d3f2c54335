import { nodeKey, RpcError } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import {
  type DatasetRecord,
  DatasetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import type { Inventory } from "./inventory.js";
import { visibleTo } from "./tenancy.js";

import { DATASETS_PREFIX } from "./vm-disk-records.js";

export { DATASETS_PREFIX } from "./vm-disk-records.js";

/** What the cluster knows about a dataset a caller named. */
export interface DatasetPlace {
  /** For ZFS: the node of the VM whose disk it is (undefined: the backend's own default). */
  readonly nodeId: string | undefined;
}

/**
 * Tenant scoping of datasets. A dataset belongs to the tenant of the VM
 * whose disk it is, or to the tenant recorded when the control plane
 * created it (a clone). A caller confined to a tenant sees only its
 * tenant's datasets; any other answers DATASET_NOT_FOUND, exactly like a
 * missing one. Disks come from node reports: a dataset claimed for more
 * than one tenant (a node naming another tenant's disk as its VM's) is
 * contested, and only cluster-wide callers see it.
 */
export interface DatasetAccess {
  /** The dataset's place, or DATASET_NOT_FOUND when the tenant may not see it. */
  resolve(
    dataset: DatasetRef,
    tenant: string | undefined,
    signal?: AbortSignal,
  ): Promise<DatasetPlace>;
  /** The tenant owning the dataset: its VMs' and the recorded one ([]: none or contested, cluster-wide only). */
  tenants(dataset: DatasetRef, signal?: AbortSignal): Promise<string[]>;
  /** Whether the tenant may see the dataset (undefined tenant: cluster-wide, always). */
  visible(dataset: DatasetRef, tenant: string | undefined, signal?: AbortSignal): Promise<boolean>;
  /**
   * Records a dataset the control plane is about to create, owned by `tenant`
   * ("" for cluster-wide only). Create-if-absent: DATASET_EXISTS when a
   * record is already there, so nobody takes over another's image.
   */
  record(record: DatasetRecord, signal?: AbortSignal): Promise<void>;
  /** Drops the record of a dataset whose creation failed. */
  forget(dataset: DatasetRef, signal?: AbortSignal): Promise<void>;
  /** The tenants the cluster knows from its records: VMs' tenants and owners of recorded datasets. */
  knownTenants(signal?: AbortSignal): Promise<Set<string>>;
}

/**
 * The one node every VM naming `dataset` as a disk is on, whatever any
 * caller may see; undefined when no VM names it. CONFLICT when they are on
 * more than one node (a second report of the name, a standby defined on
 * another node): which copy is live is not for replication to guess, and
 * the message names no node (one may be of a VM the caller may not see).
 */
export async function diskNode(
  inventory: Pick<Inventory, "vmsWithDisk">,
  dataset: DatasetRef,
  signal?: AbortSignal,
  /** Name the VMs and nodes in the refusal (a cluster-wide caller, who may see them all). */
  reveal = false,
): Promise<string | undefined> {
  const key = datasetKey(dataset);
  const owners = await inventory.vmsWithDisk((d) => datasetKey(d) === key, signal);
  const nodes = new Map(owners.map((vm) => [nodeKey(vm.nodeId?.id ?? ""), vm.nodeId?.id ?? ""]));
  if (nodes.size > 1) throw contested(owners, reveal);
  return [...nodes.values()][0];
}

/** CONFLICT for a disk that VMs on several nodes name; `reveal`: naming them (up to five). */
function contested(owners: readonly VmInfo[], reveal: boolean): RpcError {
  const which = owners
    .slice(0, 5)
    .map((vm) => `${vm.id} on ${vm.nodeId?.id ?? "?"}`)
    .join(", ");
  return new RpcError("CONFLICT", {
    message: `the dataset is a disk of vms on more than one node${reveal ? ` (${which})` : ""}; retry once only one holds it`,
  });
}

/** Creates a {@link DatasetAccess} over the inventory and the store. */
export function createDatasetAccess(deps: {
  inventory: Inventory;
  store: KvStore;
  /** Tenants the access policy names, known even before they own a VM or dataset. */
  policyTenants?: () => Iterable<string>;
}): DatasetAccess {
  const { inventory, store } = deps;
  /** The VMs naming the dataset as a disk, and the tenants claiming it (theirs and the record's; "" left out). */
  async function claims(dataset: DatasetRef, signal?: AbortSignal) {
    const key = datasetKey(dataset);
    const owners = await inventory.vmsWithDisk((d) => datasetKey(d) === key, signal);
    const tenants = new Set(owners.map((vm) => vm.tenant));
    const rec = await getMessage(store, DatasetRecordSchema, DATASETS_PREFIX + key, { signal });
    if (rec !== undefined) tenants.add(rec.message.tenant);
    tenants.delete("");
    return { owners, tenants: tenants.size > 1 ? [] : [...tenants] };
  }
  async function place(dataset: DatasetRef, tenant: string | undefined, signal?: AbortSignal) {
    const { owners, tenants } = await claims(dataset, signal);
    const visible = tenant === undefined || tenants[0] === tenant;
    // The node of a ZFS dataset: from the owners the caller may see, and only
    // when they agree (two reports of one name must not pick a copy at random).
    const mine = owners.filter((vm) => visibleTo(vm, tenant));
    const nodes = new Set(mine.map((vm) => vm.nodeId?.id ?? ""));
    if (dataset.backend === StorageBackend.BACKEND_ZFS && nodes.size > 1)
      throw contested(mine, tenant === undefined);
    const nodeId = dataset.backend === StorageBackend.BACKEND_ZFS ? [...nodes][0] : undefined;
    return { visible, nodeId };
  }
  return {
    async resolve(dataset, tenant, signal) {
      const p = await place(dataset, tenant, signal);
      if (!p.visible) throw new RpcError("DATASET_NOT_FOUND");
      return { nodeId: p.nodeId };
    },
    async forget(dataset, signal) {
      await store.delete(DATASETS_PREFIX + datasetKey(dataset), { signal });
    },
    async knownTenants(signal) {
      const out = new Set<string>();
      for (const t of deps.policyTenants?.() ?? []) if (t !== "") out.add(t);
      for (const vm of await inventory.listVms(signal)) if (vm.tenant !== "") out.add(vm.tenant);
      for await (const kv of rangeAll(store, DATASETS_PREFIX, { signal })) {
        const t = decodeMessage(DatasetRecordSchema, kv).tenant;
        if (t !== "") out.add(t);
      }
      return out;
    },
    async tenants(dataset, signal) {
      return (await claims(dataset, signal)).tenants;
    },
    async visible(dataset, tenant, signal) {
      // Whose it is, not where: a contested disk's jobs stay readable and deletable.
      const { tenants } = await claims(dataset, signal);
      return tenant === undefined || tenants[0] === tenant;
    },
    async record(record, signal) {
      if (record.dataset === undefined) throw new TypeError("dataset record without a dataset");
      const key = DATASETS_PREFIX + datasetKey(record.dataset);
      const txn = await store.txn(
        {
          compares: [{ key, modRevision: 0 }],
          success: [{ type: "put", key, value: encodeMessage(DatasetRecordSchema, record) }],
        },
        { signal },
      );
      if (!txn.succeeded) throw new RpcError("DATASET_EXISTS");
    },
  };
}
