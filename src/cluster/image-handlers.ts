import { create } from "@bufbuild/protobuf";
import {
  type CallContext,
  type CallScope,
  invalid,
  paginate,
  RpcError,
  type ServiceImpl,
  scopeOf,
} from "../core/index.js";
import {
  canClone,
  canManageImages,
  canSize,
  datasetKey,
  type StorageDriver,
} from "../drivers/index.js";
import {
  type DatasetInfo,
  DatasetInfoSchema,
  type DatasetRef,
  type ImageInfo,
  ImageInfoSchema,
  ImageTemplateSchema,
  StorageBackend,
  type StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { KvStore } from "../store/index.js";
import type { DatasetAccess } from "./dataset-access.js";
import { knownDatasets } from "./dataset-inventory.js";
import type { Inventory } from "./inventory.js";
import type { ReplicationJobs } from "./replication-jobs.js";
import { filteredScope } from "./tenancy.js";

type Handlers = Pick<
  ServiceImpl<typeof StorageService>,
  "listImages" | "deleteImage" | "flattenImage"
>;

/** What the image handlers need. */
export interface ImageHandlerDeps {
  readonly storage: StorageDriver;
  readonly inventory: Inventory;
  readonly store: KvStore;
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
}

const isRbd = (d: DatasetRef | undefined) => d?.backend === StorageBackend.BACKEND_RBD;

/**
 * RBD images: the list (with parent, templates and their clones), delete
 * and flatten. Which images exist is the cluster's dataset inventory; what
 * each is made of (snapshots, parent, clones) is the backend's answer.
 */
export function createImageHandlers(deps: ImageHandlerDeps): Handlers {
  const { storage, access } = deps;

  /** Whether `scope` sees a dataset: one of its tenants' (a tenantless one: cluster-wide callers only). */
  const sees = async (scope: CallScope, ref: DatasetRef, signal: AbortSignal) =>
    scope.clusterWide || (await access.tenants(ref, signal)).some((t) => scope.canSee(t));

  /** The image as `scope` may see it; the backend's failures leave parts unknown, not the answer. */
  async function describe(d: DatasetInfo, scope: CallScope, signal: AbortSignal) {
    const ref = d.dataset as DatasetRef;
    const snaps = await storage.listSnapshots(ref, signal).catch(() => undefined);
    const size = canSize(storage)
      ? await storage.datasetSize(ref, signal).catch(() => undefined)
      : undefined;
    const parent = canManageImages(storage)
      ? await storage.imageParent(ref, signal).then(
          (p) => (p === undefined ? undefined : { dataset: p.dataset, snapshotName: p.name }),
          () => d.origin,
        )
      : d.origin;
    // A clone of another tenant's template names no parent: its dataset and snapshot are hidden.
    const shownParent =
      parent?.dataset !== undefined && !(await sees(scope, parent.dataset, signal))
        ? undefined
        : parent;
    const templates = [];
    for (const s of snaps ?? []) {
      if (!s.protected) continue;
      const name = s.ref?.snapshotName ?? "";
      const clones = canClone(storage)
        ? await storage.listClones({ dataset: ref, name }, signal).catch(() => [])
        : [];
      const shown: DatasetRef[] = [];
      for (const c of clones) if (await sees(scope, c, signal)) shown.push(c);
      templates.push(
        create(ImageTemplateSchema, {
          snapshotName: name,
          clones: shown,
          hiddenClones: clones.length - shown.length,
        }),
      );
    }
    return create(ImageInfoSchema, {
      image: ref,
      tenant: d.tenant,
      vmId: d.vmId,
      sizeBytes: BigInt(size ?? 0),
      parent: shownParent,
      templates,
      snapshotCount: snaps === undefined ? -1 : snaps.length,
    });
  }

  /** The image a delete or flatten names (authorization already answered for one the caller may not see). */
  async function known(ref: DatasetRef | undefined, ctx: CallContext): Promise<DatasetInfo> {
    if (ref === undefined || !isRbd(ref))
      throw invalid("image: must be an RBD image (BACKEND_RBD)");
    const found = (await knownDatasets(deps, ctx.signal)).get(datasetKey(ref));
    if (found !== undefined) return found;
    // An image the backend has but the cluster never listed: cluster-wide callers only got here.
    return create(DatasetInfoSchema, { dataset: ref, snapshotCount: -1 });
  }

  const manager = () => {
    if (!canManageImages(storage)) throw new RpcError("STORAGE_UNSUPPORTED");
    return storage;
  };

  return {
    async listImages(req, ctx) {
      const scope = filteredScope(scopeOf(ctx), req.tenant);
      const all = [...(await knownDatasets(deps, ctx.signal)).entries()]
        .filter(
          ([, d]) =>
            isRbd(d.dataset) &&
            (ctx.tenant === undefined || d.tenant === ctx.tenant) &&
            (req.tenant === "" || d.tenant === req.tenant),
        )
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const page = paginate(all, ([key]) => key, req.pageSize, req.pageToken);
      const images: ImageInfo[] = [];
      for (const [, d] of page.items) images.push(await describe(d, scope, ctx.signal));
      return { images, nextPageToken: page.nextPageToken };
    },
    async deleteImage(req, ctx) {
      const d = await known(req.image, ctx);
      const ref = d.dataset as DatasetRef;
      const driver = manager();
      // In use by any VM naming it: the one a listing shows is its owner's only, and a VM no
      // tenant holds (a cluster admin's, a node's not yet assigned) must not lose its disk.
      const key = datasetKey(ref);
      const users = await deps.inventory.vmsWithDisk((x) => datasetKey(x) === key, ctx.signal);
      if (d.vmId !== "" || users.length > 0) throw new RpcError("IMAGE_IN_USE");
      const before = await describe(d, scopeOf(ctx), ctx.signal);
      await driver.deleteImage(ref, ctx.signal);
      await access.forget(ref, ctx.signal);
      return before;
    },
    async flattenImage(req, ctx) {
      const d = await known(req.image, ctx);
      const ref = d.dataset as DatasetRef;
      await manager().flattenImage(ref, ctx.signal);
      return describe(d, scopeOf(ctx), ctx.signal);
    },
  };
}
