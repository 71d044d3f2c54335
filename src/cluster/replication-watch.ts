/**
 * The WatchReplication handler: the statuses of the replication jobs a
 * caller may see, then each change, until the caller leaves or the daemon
 * stops. A job that leaves the caller's view (deleted, or its dataset given
 * to another tenant) is told as REPL_STATE_UNKNOWN. Part of
 * `createReplicationHandlers` (replication-handlers.ts).
 */
import { create } from "@bufbuild/protobuf";
import { createRecencyMap, RpcError, type ServiceImpl, scopeOf } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import {
  type DatasetRef,
  ReplicationState,
  ReplicationStatusSchema,
  type StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { ReplicationHandlerDeps } from "./replication-handlers.js";
import { inSpace, shownJobId } from "./replication-job-ids.js";
import type { ReplicationJobVisibility } from "./replication-job-visibility.js";
import { statusMessage } from "./replication-wire.js";

/** How long a dataset's owners, once asked, answer every open WatchReplication. */
const OWNERS_FRESH_MS = 1000;
/** Datasets whose owners are remembered at most. */
const OWNERS_REMEMBERED = 10_000;

/** What {@link createReplicationWatch} works with. */
export type ReplicationWatchDeps = Pick<
  ReplicationHandlerDeps,
  "jobs" | "access" | "closing" | "quota"
>;

/** Creates the WatchReplication handler; `visibleJob` finds the one job a call names. */
export function createReplicationWatch(
  deps: ReplicationWatchDeps,
  visibleJob: ReplicationJobVisibility["visibleJob"],
): Pick<ServiceImpl<typeof StorageService>, "watchReplication"> {
  const { jobs, access } = deps;
  /**
   * A dataset's owners, asked at most once a second whatever the number of
   * open watches (each progress write of a running job is a change every
   * watch of its space looks at): a VM given to another tenant is seen
   * within a second.
   */
  const owners = createRecencyMap<string, { at: number; tenants: Promise<readonly string[]> }>(
    OWNERS_REMEMBERED,
  );
  const ownersOf = (dataset: DatasetRef): Promise<readonly string[]> => {
    const key = datasetKey(dataset);
    const now = performance.now();
    const known = owners.get(key);
    if (known !== undefined && now - known.at < OWNERS_FRESH_MS) return known.tenants;
    owners.delete(key);
    // Not any one caller's signal: the answer is shared.
    const tenants = access.tenants(dataset, AbortSignal.timeout(10_000));
    tenants.catch(() => owners.delete(key));
    owners.touch(key, { at: now, tenants });
    return tenants;
  };

  return {
    async *watchReplication(req, ctx) {
      const only = req.jobId === "" ? "" : (await visibleJob(req.jobId, ctx)).job.jobId;
      const release = deps.quota?.open(ctx);
      const stop = AbortSignal.any(
        deps.closing === undefined ? [ctx.signal] : [ctx.signal, deps.closing],
      );
      const shown = new Map<string, boolean>();
      const datasets = new Map<string, DatasetRef>();
      try {
        for await (const change of jobs.watch(stop)) {
          if (only !== "" && change.jobId !== only) continue;
          if (change.status === undefined) {
            if (shown.get(change.jobId))
              yield create(ReplicationStatusSchema, {
                jobId: shownJobId(change.jobId, ctx.tenant),
                state: ReplicationState.REPL_STATE_UNKNOWN,
              });
            shown.delete(change.jobId);
            datasets.delete(change.jobId);
            if (only !== "") return;
            continue;
          }
          // Asked at every change, not once: a VM given to another tenant takes its disks,
          // and the runs over them are no longer the old tenant's to see. A job's dataset
          // never changes: read once per job.
          let dataset = datasets.get(change.jobId);
          if (dataset === undefined) {
            dataset = (await jobs.get(change.jobId, stop))?.job.plan?.dataset;
            if (dataset !== undefined) datasets.set(change.jobId, dataset);
          }
          const scope = scopeOf(ctx);
          const visible =
            dataset !== undefined &&
            inSpace(change.jobId, scope) &&
            (scope.clusterWide || (await ownersOf(dataset)).some((t) => scope.canSee(t)));
          const was = shown.get(change.jobId) ?? false;
          shown.set(change.jobId, visible);
          if (visible) yield statusMessage(change.status, ctx.tenant);
          else if (was) {
            // Gone from the caller's view, as a deleted job is.
            yield create(ReplicationStatusSchema, {
              jobId: shownJobId(change.jobId, ctx.tenant),
              state: ReplicationState.REPL_STATE_UNKNOWN,
            });
            if (only !== "") return;
          }
        }
      } catch (err) {
        // The stream ends quietly when the caller leaves or the daemon stops.
        if (!(stop.aborted && err instanceof RpcError && err.reason === "CANCELLED")) throw err;
      } finally {
        release?.();
      }
    },
  };
}
