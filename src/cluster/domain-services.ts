import type { Clock, Logger, ServiceBinding } from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import type { KvStore } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { createAgentPresence } from "./agent-presence.js";
import type { ClusterRuntime } from "./cluster-runtime.js";
import type { EventLog } from "./event-log.js";
import type { EventSink } from "./event-recorder.js";
import { createEventService } from "./event-service.js";
import type { Inventory } from "./inventory.js";
import { createMigrationService } from "./migration-service.js";
import { createNodeService } from "./node-service.js";
import { scopedJobId } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import type { ReplicationRunner } from "./replication-runner.js";
import { createStorageService } from "./storage-service.js";
import { createVmService } from "./vm-service.js";
import { createWatchQuota, type WatchQuotaLimits } from "./watch-quota.js";
import { createWatchService } from "./watch-service.js";

/** Dependencies of the debvisor.v1 domain services. */
export interface DomainServiceDeps {
  readonly inventory: Inventory;
  readonly storage: StorageDriver;
  /** Migration, drain and failover; without it those answer NOT_IMPLEMENTED. */
  readonly runtime?: ClusterRuntime;
  /** Where replication jobs and storage records live (the inventory's store). */
  readonly store: KvStore;
  readonly clock: Clock;
  /** The replication runner the daemon's scheduler shares; default: the storage service makes its own. */
  readonly replicationRunner?: ReplicationRunner;
  /** Replication policies by name, as configured. */
  readonly replicationPolicies?: Readonly<Record<string, string>>;
  /**
   * Tenants the access policy names (bindings), so a tenant with no VM or
   * dataset yet still owns its name against squatting clones.
   */
  readonly policyTenants?: () => Iterable<string>;
  readonly logger?: Logger;
  /** Placement of new VMs (default 4 vCPUs per core, no memory overcommit). */
  readonly cpuOvercommit?: number;
  readonly memoryOvercommit?: number;
  /** The daemon's shutdown: ends streams. */
  readonly closing?: AbortSignal;
  /** Open watches per caller and per tenant (default 64 and 256). */
  readonly watchLimits?: WatchQuotaLimits;
  /** The cluster's events: EventService reads them, NodeService tells cordons, drains and removals. */
  readonly events?: { readonly log: EventLog; readonly sink: EventSink };
}

/** Every debvisor.v1 cluster service the daemon serves, bound to its handlers and permissions. */
export function createDomainServices(deps: DomainServiceDeps): ServiceBinding[] {
  // One bound on open watches for the list watches, the event watch, replication's and the
  // lifecycle's (an operation's, a migration's) together.
  const quota = createWatchQuota(deps.watchLimits);
  return [
    createNodeService({
      inventory: deps.inventory,
      engine: deps.runtime?.engine,
      fenceDelayMs: deps.runtime?.failover.fenceDelayMs,
      events: deps.events?.sink,
      operations: { ops: createAgentOperations(deps.store, deps.clock), clock: deps.clock },
      presence: createAgentPresence(deps.store),
    }),
    createVmService({
      inventory: deps.inventory,
      fenceDelayMs: deps.runtime?.failover.fenceDelayMs,
      store: deps.store,
      clock: deps.clock,
      cpuOvercommit: deps.cpuOvercommit,
      memoryOvercommit: deps.memoryOvercommit,
      quota,
      storage: deps.storage,
    }),
    createMigrationService(
      deps.runtime === undefined ? undefined : { ...deps.runtime, clock: deps.clock, quota },
    ),
    createStorageService({
      storage: deps.storage,
      inventory: deps.inventory,
      store: deps.store,
      clock: deps.clock,
      runner: deps.replicationRunner,
      replicationPolicies: deps.replicationPolicies,
      policyTenants: deps.policyTenants,
      logger: deps.logger,
      closing: deps.closing,
      quota,
    }),
    ...(deps.events === undefined
      ? []
      : [createEventService({ log: deps.events.log, jobIdIn: jobIdIn(deps.store), quota })]),
    createWatchService({
      quota,
      inventory: deps.inventory,
      store: deps.store,
      fenceDelayMs: deps.runtime?.failover.fenceDelayMs,
      policyTenants: deps.policyTenants,
      closing: deps.closing,
    }),
  ];
}

/** A tenant's job id as stored: in its own space when it has a job so named, else as given. */
function jobIdIn(store: KvStore) {
  const jobs = createReplicationJobs(store);
  return async (tenant: string, id: string, signal: AbortSignal) =>
    (await jobs.get(scopedJobId(tenant, id), signal)) === undefined ? id : scopedJobId(tenant, id);
}
