import { RpcError } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import {
  type DatasetRecord,
  DatasetRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { encodeMessage, getMessage, type KvStore } from "../store/index.js";
import type { Inventory } from "./inventory.js";
import { visibleTo } from "./tenancy.js";

/** Where records of datasets the control plane created live. */
const DATASETS_PREFIX = "storage/datasets/";

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
 * missing one.
 */
export interface DatasetAccess {
  /** The dataset's place, or DATASET_NOT_FOUND when the tenant may not see it. */
  resolve(
    dataset: DatasetRef,
    tenant: string | undefined,
    signal?: AbortSignal,
  ): Promise<DatasetPlace>;
  /** Whether the tenant may see the dataset (undefined tenant: cluster-wide, always). */
  visible(dataset: DatasetRef, tenant: string | undefined, signal?: AbortSignal): Promise<boolean>;
  /** Records a dataset the control plane created, owned by `tenant` ("" for cluster-wide only). */
  record(record: DatasetRecord, signal?: AbortSignal): Promise<void>;
}

/** Creates a {@link DatasetAccess} over the inventory and the store. */
export function createDatasetAccess(deps: { inventory: Inventory; store: KvStore }): DatasetAccess {
  const { inventory, store } = deps;
  async function place(dataset: DatasetRef, tenant: string | undefined, signal?: AbortSignal) {
    const key = datasetKey(dataset);
    const owners = (await inventory.listVms(signal)).filter((vm) =>
      vm.disks.some((d) => datasetKey(d) === key),
    );
    let visible = tenant === undefined || owners.some((vm) => visibleTo(vm, tenant));
    if (!visible) {
      const rec = await getMessage(store, DatasetRecordSchema, DATASETS_PREFIX + key, { signal });
      visible = rec !== undefined && rec.message.tenant !== "" && rec.message.tenant === tenant;
    }
    const nodeId =
      dataset.backend === StorageBackend.BACKEND_ZFS ? owners[0]?.nodeId?.id : undefined;
    return { visible, nodeId };
  }
  return {
    async resolve(dataset, tenant, signal) {
      const p = await place(dataset, tenant, signal);
      if (!p.visible) throw new RpcError("DATASET_NOT_FOUND");
      return { nodeId: p.nodeId };
    },
    async visible(dataset, tenant, signal) {
      return (await place(dataset, tenant, signal)).visible;
    },
    async record(record, signal) {
      if (record.dataset === undefined) throw new TypeError("dataset record without a dataset");
      await store.put(
        DATASETS_PREFIX + datasetKey(record.dataset),
        encodeMessage(DatasetRecordSchema, record),
        { signal },
      );
    },
  };
}
