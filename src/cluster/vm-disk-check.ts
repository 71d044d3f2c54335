import { RpcError } from "../core/index.js";
import { datasetKey, type StorageDriver } from "../drivers/index.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { CreateVmRequest } from "../gen/debvisor/v1/vm_pb.js";
import type { Compare, KvStore, TxnOp } from "../store/index.js";
import type { DatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { readPlacement } from "./vm-placement.js";

/** Whether every part of a slash-separated path is a name: none empty, "." or "..". */
function plainPath(path: string): boolean {
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

/** Smallest new disk (1 MiB). */
const MIN_NEW_DISK_BYTES = 1024n * 1024n;

/**
 * The checks of a CreateVm's disks, before anything is written: each names
 * a ZFS or RBD dataset once; an existing one (size 0) must be one the VM's
 * tenant may see and no other VM's disk; a new one must be nobody's dataset
 * and no VM's disk (DATASET_EXISTS).
 *
 * A disk is one VM's: two VMs writing one image corrupt it, and on shared
 * storage the second VM's start takes the disk's lock and fences the first.
 * "Another VM's disk" is one a node reports as a VM's disk (running or not),
 * or one a managed VM's record names (created and not reported yet, or on a
 * node that is down): DISK_IN_USE, naming that VM only to a caller that may
 * see it. This check reads views that can lag the store: two creates naming
 * one disk at the same moment are told apart by {@link claimDisks}, in the
 * create's transaction.
 */
export function createVmDiskCheck(deps: { inventory: Inventory; datasets: DatasetAccess }) {
  const { inventory, datasets } = deps;

  /** The VM other than `vmId` using `d` as a disk, if any, and its tenant. */
  async function user(
    d: DatasetRef,
    vmId: string,
    signal: AbortSignal,
  ): Promise<{ id: string; tenant: string } | undefined> {
    const key = datasetKey(d);
    const same = (x: DatasetRef) => datasetKey(x) === key;
    const reported = (await inventory.vmsWithDisk(same, signal)).find((vm) => vm.id !== vmId);
    if (reported !== undefined) return { id: reported.id, tenant: reported.tenant };
    const [recorded] = await inventory.vmRecords.where(
      (rec) =>
        rec.managed &&
        rec.id !== vmId &&
        (rec.spec?.disks.some((x) => x.dataset !== undefined && same(x.dataset)) ?? false),
    );
    return recorded === undefined
      ? undefined
      : { id: recorded.rec.id, tenant: recorded.rec.tenant };
  }

  return async function checkDisks(
    req: CreateVmRequest,
    tenant: string,
    confined: boolean,
    signal: AbortSignal,
  ): Promise<void> {
    const seen = new Set<string>();
    for (const [i, disk] of (req.spec?.disks ?? []).entries()) {
      const d = disk.dataset;
      if (
        d === undefined ||
        (d.backend !== StorageBackend.BACKEND_ZFS && d.backend !== StorageBackend.BACKEND_RBD)
      )
        throw new RpcError("INVALID_ARGUMENT", {
          message: `spec.disks[${i}].dataset.backend: must be zfs or rbd`,
        });
      // One dataset, one spelling: "tank/" + "x", "tank/." + "x" and "tank" + "x/" name the
      // same zvol on the host, and would each pass as another disk.
      if (!plainPath(d.pool) || !plainPath(d.name))
        throw new RpcError("INVALID_ARGUMENT", {
          message: `spec.disks[${i}].dataset: pool and name must be plain paths (no empty, "." or ".." part)`,
        });
      const key = datasetKey(d);
      if (seen.has(key))
        throw new RpcError("INVALID_ARGUMENT", { message: `spec.disks[${i}]: named twice` });
      seen.add(key);
      if (disk.sizeBytes > 0n && disk.sizeBytes < MIN_NEW_DISK_BYTES)
        throw new RpcError("INVALID_ARGUMENT", {
          message: `spec.disks[${i}].size_bytes: at least 1 MiB for a new disk`,
        });
      if (disk.sizeBytes > 0n) {
        // Somebody's dataset, or a disk a node reports (a VM of no tenant yet included).
        if (
          (await datasets.tenants(d, signal)).length > 0 ||
          (await user(d, "", signal)) !== undefined
        )
          throw new RpcError("DATASET_EXISTS");
        continue;
      }
      await datasets.resolve(d, tenant === "" ? undefined : tenant, signal);
      const other = await user(d, req.vmId, signal);
      if (other !== undefined) throw inUse(i, d, other, tenant, confined);
    }
  };
}

/**
 * DATASET_EXISTS when the storage already holds a disk `req` asks to make
 * anew, on `nodeId`'s copy (RBD images are the cluster's, whatever the
 * node). The checks above ask what the control plane knows: a disk left
 * behind by a deleted VM (DeleteVm keeps storage) is no VM's and no
 * record's, and another tenant's create naming it as new was given the old
 * volume with its data and snapshots (an adversarial review;
 * test/tenancy-boundaries.test.ts). A backend the cluster does not have
 * holds nothing; one that cannot answer fails the create with its error.
 */
export async function refuseStoredDisks(
  storage: StorageDriver | undefined,
  req: CreateVmRequest,
  nodeId: string,
  signal: AbortSignal,
): Promise<void> {
  if (storage === undefined) return;
  for (const disk of req.spec?.disks ?? []) {
    if (disk.sizeBytes <= 0n || disk.dataset === undefined) continue;
    if ((await storage.listSnapshots(disk.dataset, signal, nodeId)) !== undefined)
      throw new RpcError("DATASET_EXISTS");
  }
}

/** DISK_IN_USE for disk `i`, naming the other VM only to a caller who may see it. */
function inUse(
  i: number,
  d: DatasetRef,
  other: { id: string; tenant: string },
  tenant: string,
  confined: boolean,
): RpcError {
  const named = !confined || other.tenant === tenant ? ` of vm ${other.id}` : "";
  return new RpcError("DISK_IN_USE", {
    message: `spec.disks[${i}]: ${d.pool}/${d.name} is already the disk${named}`,
  });
}

/** Key family of disk claims: `disk-claims/<dataset key>` holds the id of the VM created with it last. */
const CLAIMS = "disk-claims/";

/**
 * The compares and writes that claim a create's disks in its transaction,
 * read from the store itself, not a view: each disk's claim names the VM
 * created with it last, and the create compares the claim as read and
 * writes its own VM's id. Of creates naming one disk at once, the first
 * transaction wins and the others fail on the compare, plan again, and
 * here find the claim of a VM whose record (written in the same
 * transaction) still names the disk: DISK_IN_USE (DATASET_EXISTS for a
 * disk to be made new). A claim whose VM is gone
 * or no longer names the disk (deleted, a failed create) is taken over.
 * Claims are not deleted: one small key per disk ever named.
 */
export async function claimDisks(
  store: KvStore,
  req: CreateVmRequest,
  tenant: string,
  confined: boolean,
  signal: AbortSignal,
): Promise<{ compare: Compare; op: TxnOp }[]> {
  const out: { compare: Compare; op: TxnOp }[] = [];
  for (const [i, disk] of (req.spec?.disks ?? []).entries()) {
    const d = disk.dataset;
    if (d === undefined) continue;
    const key = CLAIMS + datasetKey(d);
    const claim = await store.get(key, { signal });
    const holder = claim === undefined ? "" : new TextDecoder().decode(claim.value);
    if (holder !== "" && holder !== req.vmId) {
      const { rec } = await readPlacement(store, holder, signal);
      const names = rec?.spec?.disks.some(
        (x) => x.dataset !== undefined && datasetKey(x.dataset) === datasetKey(d),
      );
      if (rec?.managed === true && names === true)
        throw disk.sizeBytes > 0n
          ? new RpcError("DATASET_EXISTS")
          : inUse(i, d, { id: holder, tenant: rec.tenant }, tenant, confined);
    }
    out.push({
      compare: { key, modRevision: claim?.modRevision ?? 0 },
      op: { type: "put", key, value: new TextEncoder().encode(req.vmId) },
    });
  }
  return out;
}
