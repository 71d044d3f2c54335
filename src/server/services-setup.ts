import type { AuditLog, AuditStages } from "../audit/index.js";
import { createAuditService } from "../audit/index.js";
import { type AgentHub, createDomainServices, createTargetResolvers } from "../cluster/index.js";
import {
  type Clock,
  type Logger,
  type ServiceBinding,
  type Stage,
  validationStage,
} from "../core/index.js";
import { file_debvisor_v1_access } from "../gen/debvisor/v1/access_pb.js";
import { file_debvisor_v1_agent } from "../gen/debvisor/v1/agent_pb.js";
import { file_debvisor_v1_audit } from "../gen/debvisor/v1/audit_pb.js";
import { file_debvisor_v1_event } from "../gen/debvisor/v1/event_pb.js";
import { file_debvisor_v1_migration } from "../gen/debvisor/v1/migration_pb.js";
import { file_debvisor_v1_node } from "../gen/debvisor/v1/node_pb.js";
import { file_debvisor_v1_pki } from "../gen/debvisor/v1/pki_pb.js";
import { file_debvisor_v1_storage } from "../gen/debvisor/v1/storage_pb.js";
import { file_debvisor_v1_vm } from "../gen/debvisor/v1/vm_pb.js";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { withPanelIssuer } from "../panel/index.js";
import {
  apiKeyResolver,
  createAccessService,
  createAuthenticationStage,
  createAuthorizationStage,
  createEnrollmentService,
  type JwtVerifier,
  nodeNamed,
} from "../security/index.js";
import type { KvStore } from "../store/index.js";
import { setUpAgentHub } from "./agent-hub-setup.js";
import type { DaemonCluster } from "./cluster-setup.js";
import type { Config } from "./config-schema.js";
import { createHealthService, createHealthState, type HealthState } from "./health-service.js";
import { createReflectionServices } from "./reflection-service.js";
import type { DaemonSecurity } from "./security-setup.js";

/** What the daemon's services need. */
export interface ServicesSetup {
  readonly config: Config;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly closing: AbortSignal;
  readonly audit: AuditLog | undefined;
  readonly auditStages: AuditStages | undefined;
  readonly security: DaemonSecurity;
  readonly cluster: DaemonCluster;
}

/** The daemon's services and the one stage pipeline every adapter runs them behind. */
export interface DaemonServices {
  /** The debvisor.v1 services. */
  readonly domain: ServiceBinding[];
  readonly health: HealthState;
  readonly healthService: ServiceBinding;
  readonly reflection: ServiceBinding[];
  readonly stages: Stage[];
  /** The agents' streams on this process. */
  readonly agentHub: AgentHub;
}

/** Binds the domain, access, audit, enrollment and agent services, health and reflection. */
export function createDaemonServices(setup: ServicesSetup): DaemonServices {
  const { config, store, clock, logger, closing, audit, auditStages, security, cluster } = setup;
  const { inventory, storage, runtime } = cluster;
  const { apiKeys, storedBindings, revocations, lockout, rateLimits, policy } = security;
  const isNode = async (name: string, signal: AbortSignal) =>
    (await inventory.getNode(name, signal)) !== undefined;
  const agentHub = setUpAgentHub({
    config,
    store,
    inventory,
    clock,
    logger,
    closing,
    audit,
    metrics: cluster.clusterMetrics,
    revokedServers: security.revokedServers,
  });
  storage.useAgents(agentHub);
  const domain: ServiceBinding[] = [
    ...createDomainServices({
      inventory,
      storage: storage.storage,
      store,
      clock,
      replicationRunner: storage.runner,
      replicationPolicies: config.storage.replication.policies,
      policyTenants: () =>
        policy().bindings.flatMap((b) => (b.tenant === undefined ? [] : [b.tenant])),
      logger,
      closing,
      runtime,
      events: { log: cluster.events.log, sink: cluster.events.recorder },
      cpuOvercommit: config.cluster.cpuOvercommit,
      memoryOvercommit: config.cluster.memoryOvercommit,
      watchLimits: {
        perPrincipal: config.limits.watchesPerPrincipal,
        perTenant: config.limits.watchesPerTenant,
      },
    }),
    createAccessService({
      policy,
      apiKeys,
      bindings: storedBindings,
      roles: security.storedRoles,
      rotationGraceMs: config.auth.apiKeys.rotationGraceMs,
      isNodeName: (name, signal) =>
        nodeNamed({ store, bindings: storedBindings, policy, isNode }, name, signal),
    }),
    ...(audit === undefined ? [] : [createAuditService({ log: audit, closing })]),
    createEnrollmentService({
      store,
      clock,
      ca: security.ca,
      revocations,
      revokedServers: security.revokedServers,
      bindings: storedBindings,
      policy,
      lockout,
      certificateDays: config.pki.certificateDays,
      minRenewalAgeMs: config.pki.minRenewalAgeSeconds * 1000,
      enrollLimit: config.pki.enrollLimit,
      isNode,
    }),
    agentHub.service,
  ];
  const health = createHealthState(domain.map((s) => s.desc.typeName));
  const healthService = createHealthService(health, closing);
  const reflectionNames = [
    ...domain.map((s) => s.desc.typeName),
    healthService.desc.typeName,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];
  const reflection = createReflectionServices(
    [
      file_debvisor_v1_node,
      file_debvisor_v1_vm,
      file_debvisor_v1_access,
      file_debvisor_v1_agent,
      file_debvisor_v1_audit,
      file_debvisor_v1_event,
      file_debvisor_v1_pki,
      file_debvisor_v1_migration,
      file_debvisor_v1_storage,
      file_grpc_health_v1_health,
      file_grpc_reflection_v1_reflection,
      file_grpc_reflection_v1alpha_reflection,
    ],
    reflectionNames,
  );
  const targetResolvers = {
    ...createTargetResolvers({ inventory, store }),
    apikey: apiKeyResolver(apiKeys),
  };
  const { skipRateLimit, skipAuthorization } = config.benchmark;
  if (skipRateLimit || skipAuthorization)
    logger.warn(
      { skipRateLimit, skipAuthorization },
      "benchmark settings: security stages left out; never run like this in production",
    );
  const { panelSessions } = security;
  let panelJwt: { base: JwtVerifier | undefined; verifier: JwtVerifier } | undefined;
  // One pipeline for every adapter: the gRPC server and the panel's Connect listener.
  const stages = [
    ...(auditStages === undefined ? [] : [auditStages.outer]),
    ...(skipRateLimit ? [] : [rateLimits.perSource]),
    createAuthenticationStage({
      apiKeys,
      jwt: () => {
        if (panelSessions === undefined) return security.jwt();
        // One object per verifier in force: a stream's re-verification knows by identity
        // whether a reload replaced the verifier it asked.
        const base = security.jwt();
        if (panelJwt === undefined || panelJwt.base !== base)
          panelJwt = { base, verifier: withPanelIssuer(panelSessions.verifier, base) };
        return panelJwt.verifier;
      },
      lockout,
      revocations,
      sessionEnds: panelSessions?.onEnd,
      credentialChanges: security.onReload,
      clock,
    }),
    ...(skipAuthorization
      ? []
      : [createAuthorizationStage(policy, targetResolvers, security.onPolicyChange)]),
    ...(skipRateLimit ? [] : [rateLimits.perPrincipal]),
    validationStage,
    ...(auditStages === undefined ? [] : [auditStages.beforeAct]),
  ];
  return { domain, health, healthService, reflection, stages, agentHub };
}
