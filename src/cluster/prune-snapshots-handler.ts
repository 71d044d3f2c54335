/**
 * The PruneSnapshots handler: plans retention over a dataset's snapshots
 * (pinned ones kept: held, protected, cloned or a replication base) and
 * deletes what the plan removes, reporting what it kept in use.
 */
import { type Clock, invalid, RpcError, type ServiceImpl } from "../core/index.js";
import { backendName, checkLabel, labelOf, type SnapshotTarget } from "../drivers/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import type { SnapshotInfo, StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { DatasetAccess } from "./dataset-access.js";
import { type DatasetSnapshots, required } from "./dataset-snapshots.js";
import { keepsNothing, planRetention } from "./retention.js";

/** What {@link createPruneSnapshotsHandler} works with. */
export interface PruneSnapshotsDeps {
  readonly clock: Clock;
  readonly access: DatasetAccess;
  readonly snapshots: DatasetSnapshots;
}

/** Creates the PruneSnapshots handler. */
export function createPruneSnapshotsHandler(
  deps: PruneSnapshotsDeps,
): Pick<ServiceImpl<typeof StorageService>, "pruneSnapshots"> {
  const { clock, access } = deps;
  const { snapshotter, snapshotsOf } = deps.snapshots;
  return {
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
  };
}
