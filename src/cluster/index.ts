// The cluster layer: the domain. Inventory of nodes and VMs, storage
// operations (snapshots, retention, replication jobs and their scheduler),
// and the transport-neutral handlers of the debvisor.v1 services.

export { msFromTimestamp, timestampFromMs } from "../core/index.js";
export type { AgentExecutorsOptions } from "./agent-executors.js";
export { createAgentExecutors, EXECUTOR_PRINCIPAL } from "./agent-executors.js";
export type { HeartbeatOutcome } from "./agent-heartbeat.js";
export type { AgentHub, AgentHubOptions } from "./agent-hub.js";
export { createAgentHub } from "./agent-hub.js";
export type { AgentOperations } from "./agent-operations.js";
export {
  createAgentOperations,
  OPERATIONS_PREFIX,
  operationKey,
  parseOperationKey,
} from "./agent-operations.js";
export type { AgentStorageOptions } from "./agent-storage.js";
export { createAgentStorage } from "./agent-storage.js";
export type { AgentRefusal } from "./agent-stream-opener.js";
export { AUDIT_INTENTS } from "./audit-intents.js";
export type { ClusterRuntime, ClusterRuntimeOptions } from "./cluster-runtime.js";
export { startClusterRuntime } from "./cluster-runtime.js";
export type { DatasetAccess, DatasetPlace } from "./dataset-access.js";
export { createDatasetAccess, diskNode } from "./dataset-access.js";
export type { DomainServiceDeps } from "./domain-services.js";
export { createDomainServices } from "./domain-services.js";
export type { DriverReporter, ReportedNode } from "./driver-reporter.js";
export { startDriverReporter } from "./driver-reporter.js";
export type { EventFilter, EventLog, EventObjectKind, StoredEvent } from "./event-log.js";
export { createEventLog, EVENTS_PREFIX } from "./event-log.js";
export type {
  ClusterEvent,
  EventRecorder,
  EventRecorderOptions,
  EventSink,
  EventStats,
} from "./event-recorder.js";
export { createEventRecorder, NO_EVENTS } from "./event-recorder.js";
export { createEventService } from "./event-service.js";
export type { Executors } from "./executors.js";
export { createLocalExecutors } from "./executors.js";
export { AVOID_FAILED_TARGET_MS, FIRST_AVOID_MS } from "./failed-targets.js";
export type { FailoverDeps, FailoverOptions } from "./failover.js";
export { FAILOVER_PRINCIPAL, failoverVm } from "./failover.js";
export type { FailoverDecision } from "./failover-controller.js";
export {
  fenceDelayAllows,
  fenceMarginMs,
  renewalSlackMs,
  selfFenceWindowMs,
} from "./fence-timing.js";
export type { Inventory, InventoryOptions, RegisterResult } from "./inventory.js";
export { createInventory } from "./inventory.js";
export { followLiveServingSerials, type LiveServingSerials } from "./live-serving-serials.js";
export type { LocalOperationRunnerOptions } from "./local-operation-runner.js";
export { startLocalOperationRunner } from "./local-operation-runner.js";
export type {
  MigrationEngine,
  MigrationEngineOptions,
  MigrationRequest,
} from "./migration-engine.js";
export { createMigrationEngine } from "./migration-engine.js";
export type { MigrationJob } from "./migration-job.js";
export type { MigrationJournal } from "./migration-journal.js";
export { createMigrationJournal } from "./migration-journal.js";
export type { ReplicaLookup } from "./migration-planner.js";
export { createPlanner, NO_REPLICAS } from "./migration-planner.js";
export type { MigrationRecords } from "./migration-records.js";
export { createMigrationRecords, MIGRATION_LOCKS } from "./migration-records.js";
export { createMigrationService } from "./migration-service.js";
export type { DrainRequest } from "./node-drain.js";
export { drainNode } from "./node-drain.js";
export { createNodeLiveness, type LivenessSource } from "./node-liveness.js";
export type { NodeServiceDeps } from "./node-service.js";
export { createNodeService } from "./node-service.js";
export { pruneOperations, startOperationRetention } from "./operation-retention.js";
export type { ReadinessEvents, ReadinessEventsOptions } from "./readiness-events.js";
export { startReadinessEvents } from "./readiness-events.js";
export type { ReplicaCatalog, ReplicaInfo } from "./replica-catalog.js";
export { createReplicaCatalog } from "./replica-catalog.js";
export { replicationLabel } from "./replicate.js";
export { scopedJobId, shownJobId, tenantOfJobId } from "./replication-handlers.js";
export type { ReplicationJobs, StatusChange, StoredJob } from "./replication-jobs.js";
export { createReplicationJobs } from "./replication-jobs.js";
export type { ReplicationPolicy } from "./replication-policy.js";
export {
  DEFAULT_POLICY,
  POLICY_NAME,
  parseReplicationPolicy,
  resolveReplicationPolicy,
} from "./replication-policy.js";
export type { ReplicationRunner, ReplicationRunnerOptions } from "./replication-runner.js";
export { createReplicationRunner } from "./replication-runner.js";
export type {
  ReplicationScheduler,
  ReplicationSchedulerOptions,
} from "./replication-scheduler.js";
export { createReplicationScheduler } from "./replication-scheduler.js";
export type { RetentionCandidate, RetentionPlan, RetentionRule } from "./retention.js";
export { planRetention } from "./retention.js";
export type { RunnerRegistry } from "./runner-registry.js";
export type { StaleCopyDecision } from "./stale-copy-removal.js";
export type { StorageServiceDeps } from "./storage-service.js";
export { createStorageService } from "./storage-service.js";
export { createEventTenants, createTargetResolvers } from "./tenancy.js";
export type {
  IssuedTransfer,
  TransferBinding,
  TransferRelay,
  TransferRelayOptions,
} from "./transfer-relay.js";
export { createTransferRelay } from "./transfer-relay.js";
export { createVmLifecycle } from "./vm-lifecycle.js";
export type { VmOperationSettlerOptions } from "./vm-operation-settler.js";
export { startVmOperationSettler } from "./vm-operation-settler.js";
export { createVmOperations, VM_OPERATIONS_PREFIX, vmOperationId } from "./vm-operations.js";
export type { PlacementChange, ReadPlacement } from "./vm-placement.js";
export {
  currentGeneration,
  firstGeneration,
  GENERATION_FLOOR_KEY,
  generationFloor,
  placementChange,
  readPlacement,
} from "./vm-placement.js";
export type { VmRecords } from "./vm-records.js";
export type { VmServiceDeps } from "./vm-service.js";
export { createVmService } from "./vm-service.js";
