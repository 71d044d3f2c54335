import { create } from "@bufbuild/protobuf";
import { type CallContext, paginate, sameNode, scopeOf } from "../core/index.js";
import { canSize, datasetKey, type StorageDriver } from "../drivers/index.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  type DatasetInfo,
  DatasetInfoSchema,
  DatasetReplicationSchema,
  type ListDatasetsRequest,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";
import { DATASETS_PREFIX } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import type { ReplicationJobs } from "./replication-jobs.js";
import { filteredScope } from "./tenancy.js";

/** Dependencies of {@link createDatasetInventory}. */
export interface DatasetInventoryDeps {
  readonly inventory: Inventory;
  readonly store: KvStore;
  readonly storage: StorageDriver;
  readonly jobs: ReplicationJobs;
}

/**
 * ListDatasets: every dataset the cluster knows of (the VMs' disks, images
 * it created, replicated ZFS datasets), with node, tenant, size, snapshot
 * count and replication jobs. The tenant filter is applied once, to the
 * joined entries, before anything else about them is looked up.
 */
export function createDatasetInventory(deps: DatasetInventoryDeps) {
  const { storage } = deps;
  const known = (signal: AbortSignal) => knownDatasets(deps, signal);

  const onNode = (d: DatasetInfo, node: string) =>
    sameNode(d.nodeId?.id ?? "", node) ||
    d.replications.some(
      (r) => sameNode(r.source?.id ?? "", node) || sameNode(r.target?.id ?? "", node),
    );

  return {
    async listDatasets(req: ListDatasetsRequest, ctx: CallContext) {
      const node = req.nodeId?.id ?? "";
      filteredScope(scopeOf(ctx), req.tenant);
      const all = [...(await known(ctx.signal)).entries()]
        .filter(
          ([, d]) =>
            // Tenancy, decided here once: another tenant's dataset is not listed at all.
            (ctx.tenant === undefined || d.tenant === ctx.tenant) &&
            (req.tenant === "" || d.tenant === req.tenant) &&
            (req.backend === StorageBackend.BACKEND_UNKNOWN ||
              d.dataset?.backend === req.backend) &&
            (node === "" || onNode(d, node)),
        )
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const page = paginate(all, ([key]) => key, req.pageSize, req.pageToken);
      const datasets = await Promise.all(
        page.items.map(async ([, d]) => {
          const ref = d.dataset;
          if (ref === undefined) return d;
          const at = d.nodeId?.id || undefined;
          // A backend that fails or times out for one dataset leaves its numbers unknown, not the list.
          const snaps = await storage.listSnapshots(ref, ctx.signal, at).catch(() => undefined);
          const size = canSize(storage)
            ? await storage.datasetSize(ref, ctx.signal, at).catch(() => undefined)
            : undefined;
          return create(DatasetInfoSchema, {
            ...d,
            snapshotCount: snaps === undefined ? -1 : snaps.length,
            sizeBytes: BigInt(size ?? 0),
          });
        }),
      );
      return { datasets, nextPageToken: page.nextPageToken };
    },
  };
}

/** Every known dataset by key, joined from the VMs, the dataset records and the jobs (sizes and snapshot counts not asked). */
export async function knownDatasets(
  deps: Omit<DatasetInventoryDeps, "storage">,
  signal: AbortSignal,
): Promise<Map<string, DatasetInfo>> {
  const { inventory, store, jobs } = deps;
  const out = new Map<string, DatasetInfo>();
  const entry = (ref: DatasetInfo["dataset"]) => {
    if (ref === undefined) return undefined;
    const key = datasetKey(ref);
    let e = out.get(key);
    if (e === undefined) {
      e = create(DatasetInfoSchema, { dataset: ref, snapshotCount: -1 });
      out.set(key, e);
    }
    return e;
  };
  for (const vm of await inventory.listVms(signal))
    for (const disk of vm.disks) {
      const e = entry(disk);
      if (e === undefined) continue;
      e.vmId = vm.id;
      e.tenant = vm.tenant;
      if (disk.backend === StorageBackend.BACKEND_ZFS) e.nodeId = vm.nodeId;
    }
  for await (const kv of rangeAll(store, DATASETS_PREFIX, { signal })) {
    const rec = decodeMessage(DatasetRecordSchema, kv);
    const e = entry(rec.dataset);
    if (e === undefined) continue;
    if (e.vmId === "") e.tenant = rec.tenant;
    e.origin = rec.origin;
  }
  for (const j of await jobs.list(signal)) {
    const e = entry(j.job.plan?.dataset);
    e?.replications.push(
      create(DatasetReplicationSchema, {
        jobId: j.job.jobId,
        source: j.job.plan?.source?.nodeId,
        target: j.job.plan?.target?.nodeId,
        state: j.status.state,
      }),
    );
  }
  return out;
}
