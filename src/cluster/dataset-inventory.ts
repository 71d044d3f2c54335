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
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";
import { DATASETS_PREFIX } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { inSpace, shownJobId } from "./replication-job-ids.js";
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
      // What a caller of that tenant would see, for a cluster-wide caller's tenant filter.
      const scope = filteredScope(scopeOf(ctx), req.tenant);
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
            // Its jobs as ListReplicationJobs shows them: none of another tenant's space (planned
            // there before the dataset's VM was given to this tenant), ids without the own prefix.
            replications: d.replications
              .filter((r) => inSpace(r.jobId, scope))
              .map((r) => ({ ...r, jobId: shownJobId(r.jobId, ctx.tenant) })),
          });
        }),
      );
      return { datasets, nextPageToken: page.nextPageToken };
    },
  };
}

/**
 * Sets whose dataset `e` is and the VM shown with it, as dataset-access.ts
 * decides: a dataset claimed for more than one tenant (its VMs' and its
 * record's; "" claims nothing) is contested, for cluster-wide callers only
 * (given to the last VM listed, a stolen node certificate had another
 * tenant's disk listed to its own tenant with the owner's size and
 * snapshots). The VM shown (and, for ZFS, its node) is one of the owner's:
 * a VM no tenant holds naming the disk (a thief's invention) is not shown
 * to the owner, nor is its node asked for the disk's size.
 */
function own(e: DatasetInfo, vms: readonly VmInfo[], recordTenant: string) {
  const tenants = new Set([...vms.map((vm) => vm.tenant), recordTenant]);
  tenants.delete("");
  e.tenant = tenants.size === 1 ? ([...tenants][0] ?? "") : "";
  const shown = e.tenant === "" ? vms.at(-1) : vms.find((vm) => vm.tenant === e.tenant);
  if (shown === undefined) return;
  e.vmId = shown.id;
  if (e.dataset?.backend === StorageBackend.BACKEND_ZFS) e.nodeId = shown.nodeId;
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
  /** The VMs naming each dataset as a disk. */
  const namedBy = new Map<DatasetInfo, VmInfo[]>();
  for (const vm of await inventory.listVms(signal))
    for (const disk of vm.disks) {
      const e = entry(disk);
      if (e === undefined) continue;
      const vms = namedBy.get(e);
      if (vms === undefined) namedBy.set(e, [vm]);
      else vms.push(vm);
    }
  /** The tenants of the control plane's records of datasets it created. */
  const recorded = new Map<DatasetInfo, string>();
  for await (const kv of rangeAll(store, DATASETS_PREFIX, { signal })) {
    const rec = decodeMessage(DatasetRecordSchema, kv);
    const e = entry(rec.dataset);
    if (e === undefined) continue;
    recorded.set(e, rec.tenant);
    e.origin = rec.origin;
  }
  for (const e of out.values()) own(e, namedBy.get(e) ?? [], recorded.get(e) ?? "");
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
