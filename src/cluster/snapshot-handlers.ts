import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  invalid,
  paginate,
  principalOf,
  RpcError,
  type ServiceImpl,
} from "../core/index.js";
import {
  backendName,
  canClone,
  canSnapshot,
  checkLabel,
  datasetKey,
  labelOf,
  type SnapshotTarget,
  type StorageDriver,
  snapshotSpec,
  stampedSnapshotName,
} from "../drivers/index.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type DatasetRef,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
  type StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import type { ReplicationJobs } from "./replication-jobs.js";
import { keepsNothing, planRetention } from "./retention.js";

type Handlers = Pick<
  ServiceImpl<typeof StorageService>,
  | "createSnapshot"
  | "listSnapshots"
  | "deleteSnapshot"
  | "pruneSnapshots"
  | "createRbdTemplateSnapshot"
  | "cloneRbdFromTemplate"
>;

/** What the snapshot handlers need. */
export interface SnapshotHandlerDeps {
  readonly storage: StorageDriver;
  readonly clock: Clock;
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
}

const DEFAULT_LABEL = "manual";
const DEFAULT_TEMPLATE_LABEL = "template";

/** Snapshots (take, list, delete, prune) and RBD templates and clones. */
export function createSnapshotHandlers(deps: SnapshotHandlerDeps): Handlers {
  const { storage, clock, jobs, access } = deps;

  const snapshotter = () => {
    if (!canSnapshot(storage)) throw new RpcError("STORAGE_UNSUPPORTED");
    return storage;
  };
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
  /** The snapshot names replication jobs of the dataset still need: their incremental bases and what they are sending now. */
  const replicationBases = async (dataset: DatasetRef, signal: AbortSignal) => {
    const key = datasetKey(dataset);
    return new Set(
      [
        ...(await jobs.list(signal))
          .filter(
            (j) => j.job.plan?.dataset !== undefined && datasetKey(j.job.plan.dataset) === key,
          )
          .flatMap((j) => [j.status.lastSnapshotName, j.status.sendingSnapshotName]),
        ...(await jobs.retiredBases(dataset, signal)),
      ].filter((name) => name !== ""),
    );
  };
  /** The dataset's snapshots, oldest first, marked with replication bases; DATASET_NOT_FOUND when missing. */
  const snapshotsOf = async (
    dataset: DatasetRef,
    nodeId: string | undefined,
    signal: AbortSignal,
  ) => {
    const snaps = await storage.listSnapshots(dataset, signal, nodeId);
    if (snaps === undefined) throw new RpcError("DATASET_NOT_FOUND");
    const bases = await replicationBases(dataset, signal);
    return snaps
      .map((s) =>
        create(SnapshotInfoSchema, { ...s, replicationBase: bases.has(s.ref?.snapshotName ?? "") }),
      )
      .sort((a, b) => (orderKey(a) < orderKey(b) ? -1 : orderKey(a) > orderKey(b) ? 1 : 0));
  };
  /** Takes a snapshot named from `label` and the current UTC second. */
  const take = async (
    dataset: DatasetRef,
    label: string,
    nodeId: string | undefined,
    signal: AbortSignal,
  ) => {
    checkLabel(label);
    const name = stampedSnapshotName(label, clock.now());
    snapshotSpec(dataset, name, "label");
    return snapshotter().createSnapshot({ dataset, name, nodeId }, signal);
  };

  return {
    async createSnapshot(req, ctx) {
      const dataset = required(req.dataset, "dataset");
      backendName(dataset);
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      const made = await take(dataset, req.label || DEFAULT_LABEL, nodeId, ctx.signal);
      return { status: StatusCode.STATUS_OK, message: "snapshot created", snapshot: made.ref };
    },

    async listSnapshots(req, ctx) {
      const dataset = required(req.dataset, "dataset");
      backendName(dataset);
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      const page = paginate(
        await snapshotsOf(dataset, nodeId, ctx.signal),
        orderKey,
        req.pageSize,
        req.pageToken,
      );
      return { snapshots: page.items, nextPageToken: page.nextPageToken };
    },

    async deleteSnapshot(req, ctx) {
      const ref = required(req.snapshot, "snapshot");
      const dataset = required(ref.dataset, "snapshot.dataset");
      snapshotSpec(dataset, ref.snapshotName, "snapshot");
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      if ((await replicationBases(dataset, ctx.signal)).has(ref.snapshotName))
        throw new RpcError("SNAPSHOT_IN_USE");
      await snapshotter().deleteSnapshot({ dataset, name: ref.snapshotName, nodeId }, ctx.signal);
      return { status: StatusCode.STATUS_OK, message: "snapshot deleted", snapshot: ref };
    },

    async pruneSnapshots(req, ctx) {
      const dataset = required(req.dataset, "dataset");
      const policy = required(req.policy, "policy");
      backendName(dataset);
      const rule = {
        keepLast: policy.keepLast,
        keepDailyDays: policy.keepDailyDays,
        keepWeeklyWeeks: policy.keepWeeklyWeeks,
      };
      if (keepsNothing(rule))
        throw invalid("policy: keeps nothing; set keep_last, keep_daily_days or keep_weekly_weeks");
      if (req.label !== "") checkLabel(req.label);
      const { nodeId } = await access.resolve(dataset, ctx.tenant, ctx.signal);
      const all = (await snapshotsOf(dataset, nodeId, ctx.signal)).filter(
        (s) => req.label === "" || labelOf(s.ref?.snapshotName ?? "") === req.label,
      );
      const byName = new Map(all.map((s) => [s.ref?.snapshotName ?? "", s]));
      const plan = planRetention(
        all.map((s) => ({
          name: s.ref?.snapshotName ?? "",
          createdMs: Number(s.created?.seconds ?? 0n) * 1000,
          pinned: s.held || s.protected || s.userRefs > 0 || s.replicationBase,
        })),
        rule,
        clock.now(),
      );
      const pick = (names: readonly string[]) =>
        names.map((n) => byName.get(n)).filter((s): s is SnapshotInfo => s !== undefined);
      const keptInUse = pick(plan.keepPinned);
      if (req.dryRun) {
        return {
          status: StatusCode.STATUS_OK,
          message: `dry run: would remove ${plan.remove.length}, keep ${all.length - plan.remove.length}`,
          removedCount: plan.remove.length,
          removed: pick(plan.remove),
          keptInUse,
          dryRun: true,
        };
      }
      const deleter = snapshotter();
      const removed: SnapshotInfo[] = [];
      for (const info of pick(plan.remove)) {
        const target: SnapshotTarget = { dataset, name: info.ref?.snapshotName ?? "", nodeId };
        try {
          await deleter.deleteSnapshot(target, ctx.signal);
          removed.push(info);
        } catch (err) {
          // A hold or a clone that appeared since the listing keeps the snapshot; anything else stops the prune.
          if (
            err instanceof RpcError &&
            (err.reason === "SNAPSHOT_HELD" || err.reason === "SNAPSHOT_HAS_CLONES")
          ) {
            keptInUse.push(info);
            continue;
          }
          if (err instanceof RpcError && err.reason === "SNAPSHOT_NOT_FOUND") continue;
          ctx.log.warn({ err, snapshot: target.name }, "prune stopped part way");
          return {
            status: StatusCode.STATUS_WARN,
            message: `removed ${removed.length} of ${plan.remove.length}, then stopped: ${err instanceof RpcError ? err.clientMessage : "internal error"}`,
            removedCount: removed.length,
            removed,
            keptInUse,
          };
        }
      }
      return {
        status: StatusCode.STATUS_OK,
        message: `removed ${removed.length}, kept ${all.length - removed.length}`,
        removedCount: removed.length,
        removed,
        keptInUse,
      };
    },

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
          .deleteSnapshot(target, new AbortController().signal)
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

/** Sort and page key: creation time, then name. */
function orderKey(s: SnapshotInfo): string {
  return `${String(s.created?.seconds ?? 0n).padStart(20, "0")}|${s.ref?.snapshotName ?? ""}`;
}

/** A message field the validation stage already requires; a TypeError-free guard for plain callers. */
function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw invalid(`${field}: required`);
  return value;
}
