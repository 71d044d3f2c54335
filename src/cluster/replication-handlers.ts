import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  type CallContext,
  type CallScope,
  type Clock,
  decodedTenant,
  encodedTenant,
  invalid,
  paginate,
  principalOf,
  RpcError,
  type ServiceImpl,
  sameNode,
  scopeOf,
  timestampFromMs,
} from "../core/index.js";
import { backendName, datasetKey, type StorageDriver } from "../drivers/index.js";
import {
  ReplicationJobRecordSchema,
  type ReplicationStatusRecord,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import {
  type DatasetRef,
  type ReplicationJob,
  ReplicationJobSchema,
  ReplicationState,
  type ReplicationStatus,
  ReplicationStatusSchema,
  StorageBackend,
  type StorageService,
  ZfsReplicationPlanSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import { type DatasetAccess, diskNode } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import type { ReplicationJobs, StoredJob } from "./replication-jobs.js";
import { resolveReplicationPolicy } from "./replication-policy.js";
import type { ReplicationRunner } from "./replication-runner.js";
import { filteredScope } from "./tenancy.js";
import type { WatchQuota } from "./watch-quota.js";

type Handlers = Pick<
  ServiceImpl<typeof StorageService>,
  | "planZfsReplication"
  | "runZfsReplication"
  | "getReplicationStatus"
  | "listReplicationJobs"
  | "deleteReplicationJob"
  | "watchReplication"
>;

/** What the replication handlers need. */
export interface ReplicationHandlerDeps {
  readonly storage: StorageDriver;
  readonly inventory: Inventory;
  readonly clock: Clock;
  readonly jobs: ReplicationJobs;
  readonly access: DatasetAccess;
  readonly runner: ReplicationRunner;
  readonly closing?: AbortSignal;
  /** Replication policies by name (`storage.replication.policies`): `policy: gold` means their string. */
  readonly policies?: Readonly<Record<string, string>>;
  /** Open watches per caller and tenant (WatchReplication counts as any Watch* does). */
  readonly quota?: WatchQuota;
}

/** How long a dataset's owners, once asked, answer every open WatchReplication. */
const OWNERS_FRESH_MS = 1000;
/** Datasets whose owners are remembered at most. */
const OWNERS_REMEMBERED = 10_000;

/** ZFS replication jobs: plan, run now, status, list, delete, watch. */
export function createReplicationHandlers(deps: ReplicationHandlerDeps): Handlers {
  const { storage, inventory, clock, jobs, access, runner } = deps;
  /**
   * A dataset's owners, asked at most once a second whatever the number of
   * open watches (each progress write of a running job is a change every
   * watch of its space looks at): a VM given to another tenant is seen
   * within a second.
   */
  const owners = new Map<string, { at: number; tenants: Promise<readonly string[]> }>();
  const ownersOf = (dataset: DatasetRef): Promise<readonly string[]> => {
    const key = datasetKey(dataset);
    const now = performance.now();
    const known = owners.get(key);
    if (known !== undefined && now - known.at < OWNERS_FRESH_MS) return known.tenants;
    owners.delete(key);
    // Not any one caller's signal: the answer is shared.
    const tenants = access.tenants(dataset, AbortSignal.timeout(10_000));
    tenants.catch(() => owners.delete(key));
    owners.set(key, { at: now, tenants });
    if (owners.size > OWNERS_REMEMBERED) owners.delete(owners.keys().next().value as string);
    return tenants;
  };

  /**
   * A job the caller may see, else REPLICATION_JOB_NOT_FOUND: in its space
   * ({@link inSpace}) and on a dataset visible to the caller's tenant.
   */
  const visibleJob = async (jobId: string, ctx: CallContext): Promise<StoredJob> => {
    // A confined caller's ids live in its tenant's space first; an unscoped
    // (older or cluster-made) id is found only when its dataset is visible.
    for (const id of ctx.tenant === undefined ? [jobId] : [scopedJobId(ctx.tenant, jobId), jobId]) {
      if (!inSpace(id, scopeOf(ctx))) continue;
      const job = await jobs.get(id, ctx.signal);
      const dataset = job?.job.plan?.dataset;
      if (
        job !== undefined &&
        dataset !== undefined &&
        (await access.visible(dataset, ctx.tenant, ctx.signal))
      )
        return job;
    }
    throw new RpcError("REPLICATION_JOB_NOT_FOUND");
  };
  /** Whether the call's scope may see a dataset: one of its owners' tenants, or cluster-wide. */
  const seenBy = async (
    dataset: DatasetRef,
    ctx: CallContext,
    signal: AbortSignal,
    scope = scopeOf(ctx),
  ) => {
    return (
      scope.clusterWide || (await access.tenants(dataset, signal)).some((t) => scope.canSee(t))
    );
  };
  /** Visibility of many jobs, asking once per dataset. */
  const visibilityOf = (ctx: CallContext, scope = scopeOf(ctx)) => {
    const cache = new Map<string, Promise<boolean>>();
    return (job: StoredJob) => {
      const dataset = job.job.plan?.dataset;
      if (dataset === undefined || !inSpace(job.job.jobId, scope)) return Promise.resolve(false);
      const key = datasetKey(dataset);
      let seen = cache.get(key);
      if (seen === undefined) {
        seen = seenBy(dataset, ctx, ctx.signal, scope);
        cache.set(key, seen);
      }
      return seen;
    };
  };

  return {
    async planZfsReplication(req, ctx) {
      const dataset = req.dataset;
      if (dataset === undefined) throw invalid("dataset: required");
      if (dataset.backend !== StorageBackend.BACKEND_ZFS)
        throw invalid("dataset.backend: replication needs a ZFS dataset (BACKEND_ZFS)");
      backendName(dataset);
      const source = req.source?.nodeId?.id ?? "";
      const target = req.target?.nodeId?.id ?? "";
      if (source === "" || target === "") throw invalid("source and target: required");
      if (source === target) throw invalid("target: must be another node than source");
      const policy = resolveReplicationPolicy(req.policy, deps.policies);
      const place = await access.resolve(dataset, ctx.tenant, ctx.signal);
      for (const node of [source, target])
        if ((await inventory.getNode(node, ctx.signal)) === undefined)
          throw new RpcError("NODE_NOT_FOUND");
      if ((await storage.listSnapshots(dataset, ctx.signal, source)) === undefined)
        throw new RpcError("DATASET_NOT_FOUND", {
          message: "dataset not found on the source node",
        });
      // A disk replicates from where its VM runs: from a replica, a run would send stale data
      // (onto the live disk, where the target is the VM's node). Each run checks it again.
      // Every VM naming the disk counts, seen by the caller or not; only a node of one the
      // caller may see is named.
      const runsOn = await diskNode(inventory, dataset, ctx.signal, ctx.tenant === undefined);
      if (runsOn !== undefined && !sameNode(runsOn, source))
        throw new RpcError("REPLICATION_SOURCE_MOVED", {
          message:
            place.nodeId !== undefined && sameNode(place.nodeId, runsOn)
              ? `the dataset's vm runs on ${runsOn}, not on ${source}: plan the replication from ${runsOn}`
              : `the dataset's vm does not run on ${source}`,
        });
      const given = req.jobId || `repl-${randomBytes(5).toString("hex")}`;
      // Per tenant: another tenant's job of the same name is neither reached nor revealed.
      const jobId = ctx.tenant === undefined ? given : scopedJobId(ctx.tenant, given);
      const now = clock.now();
      const { job } = await jobs.create(
        create(ReplicationJobRecordSchema, {
          jobId,
          plan: create(ZfsReplicationPlanSchema, { ...req, jobId }),
          intervalMs: BigInt(policy.intervalMs),
          keepSnapshots: policy.keep,
          bandwidthLimitBytesPerSecond: BigInt(policy.bandwidthLimit),
          createdBy: principalOf(ctx).id,
          createdAtMs: BigInt(now),
        }),
        now,
        ctx.signal,
      );
      return jobMessage(job, ctx.tenant);
    },

    async runZfsReplication(req, ctx) {
      const { jobId } = (await visibleJob(req.jobId, ctx)).job;
      // The run outlives a caller who stops waiting: it goes on, and WatchReplication follows it.
      const run = runner.run(jobId);
      run.catch(() => {});
      const outcome = await untilAborted(run, ctx.signal);
      return statusMessage(outcome ?? (await visibleJob(req.jobId, ctx)).status, ctx.tenant);
    },

    async getReplicationStatus(req, ctx) {
      return statusMessage((await visibleJob(req.jobId, ctx)).status, ctx.tenant);
    },

    async listReplicationJobs(req, ctx) {
      const visible = visibilityOf(ctx, filteredScope(scopeOf(ctx), req.tenant));
      const all = await jobs.list(ctx.signal);
      const shown: StoredJob[] = [];
      for (const j of all) if (await visible(j)) shown.push(j);
      const page = paginate(shown, (j) => j.job.jobId, req.pageSize, req.pageToken);
      return {
        jobs: page.items.map((j) => jobMessage(j, ctx.tenant)),
        nextPageToken: page.nextPageToken,
      };
    },

    async deleteReplicationJob(req, ctx) {
      const { jobId } = (await visibleJob(req.jobId, ctx)).job;
      return jobMessage(await jobs.delete(jobId, ctx.signal), ctx.tenant);
    },

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

/** Resolves with the promise's value, or undefined once `signal` aborts first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/**
 * A tenant's part of its jobs' stored ids: its name, as it always was, when
 * `<name>:<id>` is a valid store key (printable ASCII) and the name does not
 * start with '~'; else core `encodedTenant` ('~' and base64url), which such
 * a name cannot be. {@link tenantOfJobId} reads either back.
 */
function jobTenantSegment(tenant: string): string {
  return /^[\x21-\x7e]+$/.test(tenant) && !tenant.startsWith("~") ? tenant : encodedTenant(tenant);
}

/**
 * The stored id of a tenant's job: `<tenant's segment>:<id>`. A job id never
 * holds ':' (its pattern forbids it), so the last ':' ends the tenant's part
 * and no tenant can name an id in another's space.
 */
export function scopedJobId(tenant: string, jobId: string): string {
  return `${jobTenantSegment(tenant)}:${jobId}`;
}

/**
 * Whether a stored job id is in a scope's space: any for a cluster-wide
 * caller; for a confined one, an unscoped id or one of a tenant it may see.
 * A job planned in one tenant's space is not another's to see or stop when
 * its dataset changes hands (a VM given to another tenant): its id names
 * the tenant that planned it. A cluster admin deletes or keeps it.
 */
function inSpace(jobId: string, scope: CallScope): boolean {
  if (scope.clusterWide) return true;
  const tenant = tenantOfJobId(jobId);
  return tenant === "" || scope.canSee(tenant);
}

/** The tenant whose space a stored job id is in ("" for an unscoped id). */
export function tenantOfJobId(jobId: string): string {
  const at = jobId.lastIndexOf(":");
  if (at <= 0) return "";
  const segment = jobId.slice(0, at);
  return decodedTenant(segment) ?? segment;
}

/** A stored job id as `tenant` knows it: its own prefix dropped. */
export function shownJobId(jobId: string, tenant: string | undefined): string {
  if (tenant === undefined) return jobId;
  const prefix = `${jobTenantSegment(tenant)}:`;
  return jobId.startsWith(prefix) ? jobId.slice(prefix.length) : jobId;
}

/** A stored status as the API shows it (to `tenant`, with its ids unscoped). */
export function statusMessage(s: ReplicationStatusRecord, tenant?: string): ReplicationStatus {
  const ms = (v: bigint) => (v === 0n ? undefined : timestampFromMs(Number(v)));
  return create(ReplicationStatusSchema, {
    jobId: shownJobId(s.jobId, tenant),
    state: s.state,
    lastSnapshotName: s.lastSnapshotName,
    bytesTransferred: s.bytesTransferred,
    durationMs: s.durationMs,
    lastError: s.lastError,
    lastErrorReason: s.lastErrorReason,
    lastUpdate: ms(s.updatedAtMs),
    bytesExpected: s.bytesExpected,
    incremental: s.incremental,
    baseSnapshotName: s.baseSnapshotName,
    consecutiveFailures: s.consecutiveFailures,
    nextRun: ms(s.nextRunAtMs),
    lastSuccess: ms(s.lastSuccessAtMs),
    successfulRuns: s.successfulRuns,
    followed: s.followed,
    followedAt: ms(s.followedAtMs),
  });
}

/** A stored job as the API shows it (to `tenant`, with its ids unscoped). */
export function jobMessage(j: StoredJob, tenant?: string): ReplicationJob {
  const jobId = shownJobId(j.job.jobId, tenant);
  return create(ReplicationJobSchema, {
    jobId,
    plan: j.job.plan === undefined ? undefined : { ...j.job.plan, jobId },
    status: statusMessage(j.status, tenant),
    createdBy: j.job.createdBy,
    created: timestampFromMs(Number(j.job.createdAtMs)),
  });
}
