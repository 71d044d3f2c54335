import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import {
  type CallContext,
  defineService,
  parseLabelSelector,
  type ServiceBinding,
  scopeOf,
} from "../core/index.js";
import {
  ListMigrationsRequestSchema,
  type Migration,
  MigrationSchema,
} from "../gen/debvisor/v1/migration_pb.js";
import {
  ListNodesRequestSchema,
  type NodeSummary,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import {
  ListReplicationJobsRequestSchema,
  type ReplicationJob,
  ReplicationJobSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import { ListVmsRequestSchema, type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import {
  type WatchEventHeader,
  WatchEventHeaderSchema,
  WatchEventType,
  type WatchFrom,
  type WatchNodesRequest,
  WatchService,
  type WatchVmsRequest,
} from "../gen/debvisor/v1/watch_pb.js";
import type { KvStore } from "../store/index.js";
import { createDatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { createListWatch, type ListWatch, type WatchView } from "./list-watch.js";
import { createMigrationRecords } from "./migration-records.js";
import { migrationMatches } from "./migration-service.js";
import { nodeMatches } from "./node-service.js";
import { jobMessage, shownJobId } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import { filteredScope, scopeNode } from "./tenancy.js";
import { vmMatches } from "./vm-service.js";
import { observedVms } from "./vm-view.js";
import { createWatchQuota, type WatchQuota } from "./watch-quota.js";

/** Dependencies of {@link createWatchService}. */
export interface WatchServiceDeps {
  readonly inventory: Inventory;
  /** Open watches per caller and tenant, shared with the event watch. */
  readonly quota?: WatchQuota;
  /** Where migrations, replication jobs and dataset records live. */
  readonly store: KvStore;
  /** As for VmService: a down node's VMs show unknown, then stopped. */
  readonly fenceDelayMs?: number;
  /** Tenants the access policy names, as for StorageService. */
  readonly policyTenants?: () => Iterable<string>;
  /** How often a watch lists again (default 1000 ms). */
  readonly intervalMs?: number;
  /** Ends every watch (the daemon's shutdown). */
  readonly closing?: AbortSignal;
}

const bytes = <D extends DescMessage>(schema: D, m: MessageShape<D>) =>
  Buffer.from(toBinary(schema, m)).toString("latin1");

/**
 * WatchService: the node, VM, migration and replication job lists as they
 * change. Each watch filters and scopes exactly as its List does (the same
 * functions), so a watch never shows what the List would not.
 */
export function createWatchService(deps: WatchServiceDeps): ServiceBinding {
  const { inventory, intervalMs } = deps;
  const quota = deps.quota ?? createWatchQuota();
  const migrationRecords = createMigrationRecords(deps.store);
  const jobs = createReplicationJobs(deps.store);
  const access = createDatasetAccess({
    inventory,
    store: deps.store,
    policyTenants: deps.policyTenants,
  });

  const nodes = createListWatch<NodeSummary>({
    intervalMs,
    list: async (signal) =>
      (await inventory.listNodes(signal)).map((n) => ({
        key: n.info?.id?.id ?? "",
        item: n,
        tenants: [],
      })),
    // Ages grow on every look; a change is what the node reported or what it is.
    digest: (n) => bytes(NodeSummarySchema, { ...n, heartbeatAgeMs: 0n, notReadyForMs: 0n }),
  });
  const vms = createListWatch<VmInfo>({
    intervalMs,
    list: async (signal) =>
      observedVms(
        await inventory.listVms(signal),
        await inventory.listNodes(signal),
        deps.fenceDelayMs,
      ).map((vm) => ({ key: vm.id, item: vm, tenants: vm.tenant === "" ? [] : [vm.tenant] })),
    digest: (vm) => bytes(VmInfoSchema, vm),
  });
  const migrations = createListWatch<Migration>({
    intervalMs,
    list: async (signal) =>
      (await migrationRecords.list(signal))
        .filter((r) => r.record.migration !== undefined)
        .map((r) => ({
          key: r.record.migration?.migrationId ?? "",
          item: r.record.migration as Migration,
          tenants: r.record.tenant === "" ? [] : [r.record.tenant],
        }))
        .reverse(),
    digest: (m) => bytes(MigrationSchema, m),
  });
  const replicationJobs = createListWatch<ReplicationJob>({
    intervalMs,
    list: async (signal) => {
      const out = [];
      for (const j of await jobs.list(signal)) {
        const dataset = j.job.plan?.dataset;
        if (dataset === undefined) continue;
        const tenants = await access.tenants(dataset, signal);
        out.push({ key: j.job.jobId, item: jobMessage(j), tenants });
      }
      return out;
    },
    digest: (j) => bytes(ReplicationJobSchema, j),
  });

  /** Runs one watch for a call, turning its changes into the method's events. */
  async function* follow<T, E>(
    watch: ListWatch<T>,
    view: WatchView<T>,
    from: WatchFrom | undefined,
    ctx: CallContext,
    event: (header: WatchEventHeader, item: T | undefined) => E,
  ): AsyncGenerator<E> {
    const signal =
      deps.closing === undefined ? ctx.signal : AbortSignal.any([ctx.signal, deps.closing]);
    const release = quota.open(ctx);
    try {
      yield* changes();
    } finally {
      release();
    }
    async function* changes(): AsyncGenerator<E> {
      for await (const change of watch.watch(
        view,
        from?.sinceRevision ?? "",
        ctx.scope?.access ?? "",
        signal,
      )) {
        if (change.type === "synced")
          yield event(
            create(WatchEventHeaderSchema, {
              type: WatchEventType.SYNCED,
              revision: change.revision,
              resumed: change.resumed,
            }),
            undefined,
          );
        else yield event(create(WatchEventHeaderSchema, { type: TYPES[change.type] }), change.item);
      }
    }
  }

  const vmSelector = (req: WatchVmsRequest) => parseLabelSelector(req.list?.selector ?? "");
  const nodeSelector = (req: WatchNodesRequest) => parseLabelSelector(req.list?.selector ?? "");
  return defineService(
    WatchService,
    {
      watchNodes: { permission: "node:list", mutating: false, validate: nodeSelector },
      watchVms: { permission: "vm:list", mutating: false, validate: vmSelector },
      watchMigrations: { permission: "migration:list", mutating: false },
      watchReplicationJobs: { permission: "storage:replication:status", mutating: false },
    },
    {
      async *watchNodes(req, ctx) {
        const list = req.list ?? create(ListNodesRequestSchema);
        const scope = filteredScope(scopeOf(ctx), list.tenant);
        const selector = nodeSelector(req);
        yield* follow(
          nodes,
          (e) => (nodeMatches(e.item, list, selector) ? scopeNode(e.item, scope) : undefined),
          req.from,
          ctx,
          (header, node) => ({ header, node }),
        );
      },
      async *watchVms(req, ctx) {
        const list = req.list ?? create(ListVmsRequestSchema);
        const scope = filteredScope(scopeOf(ctx), list.tenant);
        const selector = vmSelector(req);
        yield* follow(
          vms,
          (e) => (vmMatches(e.item, list, scope, selector) ? e.item : undefined),
          req.from,
          ctx,
          (header, vm) => ({ header, vm }),
        );
      },
      async *watchMigrations(req, ctx) {
        const list = req.list ?? create(ListMigrationsRequestSchema);
        const scope = filteredScope(scopeOf(ctx), list.tenant);
        yield* follow(
          migrations,
          (e) =>
            canSeeAny(scope, e.tenants) && migrationMatches(e.item, list) ? e.item : undefined,
          req.from,
          ctx,
          (header, migration) => ({ header, migration }),
        );
      },
      async *watchReplicationJobs(req, ctx) {
        const list = req.list ?? create(ListReplicationJobsRequestSchema);
        const scope = filteredScope(scopeOf(ctx), list.tenant);
        yield* follow(
          replicationJobs,
          // Job ids in a tenant's own space are shown without the tenant, as the List shows them.
          (e) => (canSeeAny(scope, e.tenants) ? shownJob(e.item, ctx.tenant) : undefined),
          req.from,
          ctx,
          (header, job) => ({ header, job }),
        );
      },
    },
  );
}

const TYPES = {
  added: WatchEventType.ADDED,
  modified: WatchEventType.MODIFIED,
  deleted: WatchEventType.DELETED,
} as const;

/** Whether the scope sees an object of these tenants (a tenantless one: cluster-wide callers only). */
function canSeeAny(
  scope: { clusterWide: boolean; canSee(t: string): boolean },
  tenants: readonly string[],
) {
  return scope.clusterWide || tenants.some((t) => scope.canSee(t));
}

/** A job as `tenant` knows it: ids in its own space without the tenant (the same object otherwise). */
function shownJob(j: ReplicationJob, tenant: string | undefined): ReplicationJob {
  const jobId = shownJobId(j.jobId, tenant);
  if (jobId === j.jobId) return j;
  return create(ReplicationJobSchema, {
    ...j,
    jobId,
    plan: j.plan === undefined ? undefined : { ...j.plan, jobId },
    status: j.status === undefined ? undefined : { ...j.status, jobId },
  });
}
