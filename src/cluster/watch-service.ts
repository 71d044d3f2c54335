import { create } from "@bufbuild/protobuf";
import { defineService, parseLabelSelector, type ServiceBinding, scopeOf } from "../core/index.js";
import { ListMigrationsRequestSchema } from "../gen/debvisor/v1/migration_pb.js";
import { ListNodesRequestSchema } from "../gen/debvisor/v1/node_pb.js";
import {
  ListReplicationJobsRequestSchema,
  type ReplicationJob,
  ReplicationJobSchema,
} from "../gen/debvisor/v1/storage_pb.js";
import { ListVmsRequestSchema } from "../gen/debvisor/v1/vm_pb.js";
import {
  type WatchNodesRequest,
  WatchService,
  type WatchVmsRequest,
} from "../gen/debvisor/v1/watch_pb.js";
import type { KvStore } from "../store/index.js";
import type { Inventory } from "./inventory.js";
import { migrationMatches } from "./migration-service.js";
import { nodeMatches } from "./node-service.js";
import { shownJobId } from "./replication-handlers.js";
import { inSpace } from "./replication-job-ids.js";
import { filteredScope, scopeNode } from "./tenancy.js";
import { vmMatches } from "./vm-service.js";
import { createWatchFollow } from "./watch-follow.js";
import { createWatchLists } from "./watch-lists.js";
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

/**
 * WatchService: the node, VM, migration and replication job lists as they
 * change. Each watch filters and scopes exactly as its List does (the same
 * functions), so a watch never shows what the List would not.
 */
export function createWatchService(deps: WatchServiceDeps): ServiceBinding {
  const quota = deps.quota ?? createWatchQuota();
  const { nodes, vms, migrations, replicationJobs } = createWatchLists(deps);
  const follow = createWatchFollow({ quota, closing: deps.closing });

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
          // Job ids in a tenant's own space are shown without the tenant, as the List shows them;
          // a job of another tenant's space is not shown (its dataset given to this tenant since).
          (e) =>
            canSeeAny(scope, e.tenants) && inSpace(e.key, scope)
              ? shownJob(e.item, ctx.tenant)
              : undefined,
          req.from,
          ctx,
          (header, job) => ({ header, job }),
        );
      },
    },
  );
}

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
