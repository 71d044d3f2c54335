/**
 * The RBD template handlers: CreateRbdTemplateSnapshot (a protected
 * snapshot to clone from) and CloneRbdFromTemplate (a new image owned by
 * the caller's tenant, its owner record written before the clone).
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, invalid, principalOf, RpcError, type ServiceImpl } from "../core/index.js";
import { backendName, canClone, type StorageDriver, snapshotSpec } from "../drivers/index.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import { StorageBackend, type StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import { type DatasetSnapshots, required } from "./dataset-snapshots.js";

/** What {@link createRbdTemplateHandlers} works with. */
export interface RbdTemplateHandlerDeps {
  readonly storage: StorageDriver;
  readonly clock: Clock;
  readonly access: DatasetAccess;
  readonly snapshots: DatasetSnapshots;
}

const DEFAULT_TEMPLATE_LABEL = "template";

/** RBD templates (a protected snapshot) and clones from them. */
export function createRbdTemplateHandlers(
  deps: RbdTemplateHandlerDeps,
): Pick<ServiceImpl<typeof StorageService>, "createRbdTemplateSnapshot" | "cloneRbdFromTemplate"> {
  const { storage, clock, access } = deps;
  const { take, snapshotsOf } = deps.snapshots;

  /**
   * `acme-corp-db` starts with `acme-` but is named for tenant `acme-corp`:
   * a tenant may not take names under the prefix of a longer tenant name the
   * cluster knows, so nobody squats another tenant's names.
   */
  const notAnotherTenantsName = async (name: string, tenant: string, signal: AbortSignal) => {
    for (const other of await access.knownTenants(signal))
      if (other !== tenant && other.length > tenant.length && name.startsWith(`${other}-`))
        throw invalid(
          `new_image.name: must start with "${tenant}-" and not be another tenant's name`,
        );
  };
  const cloner = () => {
    if (!canClone(storage)) throw new RpcError("STORAGE_UNSUPPORTED");
    return storage;
  };

  return {
    async createRbdTemplateSnapshot(req, ctx) {
      const image = required(req.image, "image");
      if (image.backend !== StorageBackend.BACKEND_RBD)
        throw invalid("image.backend: templates are RBD snapshots (BACKEND_RBD)");
      backendName(image, "image");
      await access.resolve(image, ctx.tenant, ctx.signal);
      const driver = cloner();
      const made = await take(image, req.label || DEFAULT_TEMPLATE_LABEL, undefined, ctx.signal);
      const target = { dataset: image, name: made.ref?.snapshotName ?? "" };
      try {
        await driver.protectSnapshot(target, ctx.signal);
      } catch (err) {
        await driver
          .deleteSnapshot(target, AbortSignal.timeout(30_000))
          .catch((e: unknown) =>
            ctx.log.warn(
              { err: e, snapshot: target.name },
              "unprotected template snapshot left behind",
            ),
          );
        throw err;
      }
      return {
        status: StatusCode.STATUS_OK,
        message: "template snapshot created and protected",
        snapshot: made.ref,
      };
    },

    async cloneRbdFromTemplate(req, ctx) {
      const template = required(req.templateSnapshot, "template_snapshot");
      const source = required(template.dataset, "template_snapshot.dataset");
      const image = required(req.newImage, "new_image");
      if (
        source.backend !== StorageBackend.BACKEND_RBD ||
        image.backend !== StorageBackend.BACKEND_RBD
      )
        throw invalid("clones are RBD images: template_snapshot and new_image need BACKEND_RBD");
      snapshotSpec(source, template.snapshotName, "template_snapshot");
      backendName(image, "new_image");
      let owner = req.tenant;
      if (ctx.tenant !== undefined) {
        if (req.tenant !== "" && req.tenant !== ctx.tenant) throw new RpcError("PERMISSION_DENIED");
        if (!image.name.startsWith(`${ctx.tenant}-`))
          throw invalid(`new_image.name: must start with "${ctx.tenant}-" (your tenant)`);
        owner = ctx.tenant;
        await notAnotherTenantsName(image.name, ctx.tenant, ctx.signal);
      }
      await access.resolve(source, ctx.tenant, ctx.signal);
      const driver = cloner();
      const snap = (await snapshotsOf(source, undefined, ctx.signal)).find(
        (s) => s.ref?.snapshotName === template.snapshotName,
      );
      if (snap === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
      if (!snap.protected) throw new RpcError("SNAPSHOT_NOT_PROTECTED");
      // The owner record first: a clone must never exist without one (its tenant
      // would get NOT_FOUND for its own image). A failed clone leaves a record
      // of an image that does not exist, which hides nothing and names nothing.
      await access.record(
        create(DatasetRecordSchema, {
          dataset: image,
          tenant: owner,
          origin: template,
          createdBy: principalOf(ctx).id,
          createdAtMs: BigInt(clock.now()),
        }),
        ctx.signal,
      );
      try {
        await driver.cloneSnapshot(
          { dataset: source, name: template.snapshotName },
          image,
          ctx.signal,
        );
      } catch (err) {
        await access.forget(image, AbortSignal.timeout(30_000)).catch(() => undefined);
        throw err;
      }
      return { status: StatusCode.STATUS_OK, message: "clone created", clone: image };
    },
  };
}
