import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createAuditService, createAuditStages } from "../audit/index.js";
import { packageVersion } from "../client/index.js";
import {
  createAgentExecutors,
  createAgentOperations,
  createDomainServices,
  createInventory,
  createLocalExecutors,
  createTargetResolvers,
  startClusterRuntime,
  startDriverReporter,
} from "../cluster/index.js";
import { type Clock, type ServiceBinding, systemClock, validationStage } from "../core/index.js";
import { createSimulation, type Simulation } from "../drivers/index.js";
import { file_debvisor_v1_access } from "../gen/debvisor/v1/access_pb.js";
import { file_debvisor_v1_agent } from "../gen/debvisor/v1/agent_pb.js";
import { file_debvisor_v1_audit } from "../gen/debvisor/v1/audit_pb.js";
import { file_debvisor_v1_migration } from "../gen/debvisor/v1/migration_pb.js";
import { file_debvisor_v1_node } from "../gen/debvisor/v1/node_pb.js";
import { file_debvisor_v1_pki } from "../gen/debvisor/v1/pki_pb.js";
import { file_debvisor_v1_storage } from "../gen/debvisor/v1/storage_pb.js";
import { file_debvisor_v1_vm } from "../gen/debvisor/v1/vm_pb.js";
import {
  file_grpc_health_v1_health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { createPanelSessions, withPanelIssuer } from "../panel/index.js";
import {
  type AccessPolicy,
  apiKeyResolver,
  type Binding,
  createAccessService,
  createAuthenticationStage,
  createAuthorizationStage,
  createCertificateLedger,
  createEnrollmentService,
  createLockout,
  createRateLimitStages,
  loadApiKeys,
  loadRevocations,
  loadStoredBindings,
  loadStoredRoles,
  nodeNamed,
} from "../security/index.js";
import { jwtVerifierFromConfig, policyFromConfig } from "./access-config.js";
import { setUpAgentHub } from "./agent-hub-setup.js";
import { loadClusterCa } from "./cluster-ca.js";
import { createClusterMetrics } from "./cluster-metrics.js";
import type { Config } from "./config-schema.js";
import { dataDirectories, lockDataDirectories } from "./data-dir-lock.js";
import {
  claimDevNodes,
  type DevAgents,
  type DevAgentsPlan,
  planDevAgents,
  startDevAgents,
} from "./dev-agents.js";
import {
  type DevEnvironment,
  ensureDevOperatorKey,
  prepareDevEnvironment,
  writeDevContext,
} from "./dev-environment.js";
import { enrollSimulatedNodes } from "./dev-node-enrollment.js";
import { createHealthService, createHealthState } from "./health-service.js";
import { type HttpEndpoints, startHttpEndpoints } from "./http-endpoints.js";
import { libvirtNodes } from "./libvirt-nodes.js";
import { createLogger, type DaemonLogger } from "./logger.js";
import { createMetrics } from "./metrics.js";
import { DEFAULT_AUDIT_PATH, openAudit } from "./open-audit.js";
import { DEFAULT_SQLITE_PATH, openStore } from "./open-store.js";
import { type PanelServer, startPanelServer } from "./panel-server.js";
import { startReadiness } from "./readiness.js";
import { createReflectionServices } from "./reflection-service.js";
import { startRpcServer } from "./rpc-server.js";
import { issuedBy, renewalTime, renewServerCertificate, watchFiles } from "./server-certificate.js";
import { startStorage } from "./storage-setup.js";
import { instrumentStore } from "./store-metrics.js";
import { failoverAuditFields, settledAuditFields } from "./system-audit.js";
import { createSystemdNotifier } from "./systemd-notifier.js";
import {
  DEFAULT_TLS_PATHS,
  readTlsMaterial,
  type TlsMaterial,
  type TlsPaths,
} from "./tls-material.js";

/** Options of {@link startDaemon}. */
export interface DaemonOptions {
  readonly config: Config;
  /** Re-reads configuration on reload (SIGHUP); throws ConfigError when it is wrong. */
  readonly reloadConfig?: () => Config;
  readonly env?: NodeJS.ProcessEnv;
  readonly clock?: Clock;
  readonly logger?: DaemonLogger;
}

/** A running debvisor-rpcd. */
export interface Daemon {
  /** HOST:PORT of the gRPC endpoint. */
  readonly grpcAddress: string;
  /** HOST:PORT of /metrics, /healthz and /readyz, when enabled. */
  readonly httpAddress: string | undefined;
  /** https://HOST:PORT/ of the web panel, when it is served. */
  readonly panelUrl: string | undefined;
  /** Dev mode: the one-time password of the panel's user admin (never logged; the banner shows it). */
  readonly devPanelPassword: string | undefined;
  /** Dev-mode files, when in dev mode. */
  readonly dev: DevEnvironment | undefined;
  /** Dev mode with dev.agents: the node agent processes. */
  readonly devAgents: DevAgents | undefined;
  /** Re-reads configuration and TLS files; keeps the running ones when the new ones are wrong. */
  reload(): Promise<boolean>;
  /** Drains calls in flight (up to shutdown.drainTimeoutMs) and stops. Idempotent. */
  shutdown(reason: string): Promise<void>;
}

/** Starts the daemon: TLS gRPC endpoint, operational HTTP endpoints, simulation when enabled. */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  let config = options.config;
  // Before anything is opened or written: a second daemon on these directories stops here.
  const dataDirLock = lockDataDirectories(
    dataDirectories(config, { sqlitePath: DEFAULT_SQLITE_PATH, auditPath: DEFAULT_AUDIT_PATH }),
  );
  const env = options.env ?? {};
  const clock = options.clock ?? systemClock;
  const logger =
    options.logger ?? createLogger(config.log.level, config.log.file, config.log.format, env);
  const notifier = createSystemdNotifier(env, logger);
  const closing = new AbortController();

  const dev = config.dev.enabled
    ? await prepareDevEnvironment(config.dev.dataDir, logger)
    : undefined;
  const tlsPaths = (c: Config): TlsPaths => ({
    cert: c.tls.cert ?? dev?.serverCert ?? DEFAULT_TLS_PATHS.cert,
    key: c.tls.key ?? dev?.serverKey ?? DEFAULT_TLS_PATHS.key,
    clientCa: c.tls.clientCa ?? dev?.caCert ?? DEFAULT_TLS_PATHS.clientCa,
  });
  const expiries: Record<string, number> = {};
  const noteExpiry = (name: string, pem: string) => {
    try {
      const at = Date.parse(new X509Certificate(pem).validTo);
      expiries[name] = at;
      const daysLeft = (at - clock.now()) / 86_400_000;
      if (daysLeft < 30)
        logger.warn(
          { certificate: name, daysLeft: Math.floor(daysLeft) },
          "certificate expires within 30 days",
        );
    } catch {
      // unreadable certificates are refused where they are loaded
    }
  };
  const loadTls = (c: Config): TlsMaterial => {
    const material = readTlsMaterial(tlsPaths(c), clock.now());
    noteExpiry("server", material.certPem);
    noteExpiry("client-ca", material.clientCaPem);
    return material;
  };
  const tls = loadTls(config);
  const metrics = createMetrics(clock.now);
  const audit = config.audit.enabled
    ? await openAudit(config, dev?.dataDir, logger, metrics.observeAuditSync)
    : undefined;
  const auditStages =
    audit === undefined
      ? undefined
      : createAuditStages({
          log: audit,
          allowReadsWhenFailing: config.audit.allowReadsWhenFailing,
          refusalIntervalMs: config.audit.refusals.intervalMs,
          refusalMaxSources: config.audit.refusals.maxSources,
          logger,
        });

  const store = instrumentStore(openStore(config, logger), metrics.registry);
  const apiKeys = await loadApiKeys(store, clock, logger);
  // Dev mode's admin certificate administers security and operates the cluster.
  const devBindings: Binding[] =
    dev === undefined
      ? []
      : [
          { principal: "admin", roles: ["admin", "operator"] },
          // The panel's dev-mode user admin (principal user:admin) may do as much.
          { principal: "user:admin", roles: ["admin", "operator"] },
        ];
  let configPolicy: AccessPolicy = policyFromConfig(config, devBindings);
  const storedBindings = await loadStoredBindings(store, clock, logger);
  const revocations = await loadRevocations(store, clock, logger);
  const storedRoles = await loadStoredRoles(store, clock, logger);
  const ca = await loadClusterCa(config, dev);
  const ledger = createCertificateLedger(store, clock);
  // Certificates made outside the RPC are recorded too, so their renewals chain to them.
  if (dev !== undefined) {
    for (const [file, kind] of [
      [dev.adminCert, "client"],
      [dev.serverCert, "server"],
    ] as const)
      await ledger.record(readFileSync(file, "utf8"), { issuedBy: "dev-mode", kind });
  }
  let policy: AccessPolicy = configPolicy;
  // The policy in force: the config's roles and bindings plus those set through the API.
  const rebuildPolicy = () => {
    // Stored roles never shadow built-in or config-file roles.
    const roles = new Map(configPolicy.roles);
    for (const r of storedRoles.all()) {
      if (!roles.has(r.name))
        roles.set(
          r.name,
          Object.freeze({ name: r.name, grants: Object.freeze([...r.grants]), builtIn: false }),
        );
    }
    policy = Object.freeze({
      roles,
      bindings: [
        ...configPolicy.bindings,
        ...storedBindings
          .all()
          .map((b) => ({ principal: b.principal, roles: b.roles, tenant: b.tenant || undefined })),
      ],
    });
  };
  storedBindings.onChange(rebuildPolicy);
  storedRoles.onChange(rebuildPolicy);
  rebuildPolicy();
  let jwt = jwtVerifierFromConfig(config, clock);
  const panelSessions =
    (config.panel.enabled ?? config.dev.enabled)
      ? await createPanelSessions({
          store,
          clock,
          accessTtlMs: config.panel.accessTtlMs,
          sessionTtlMs: config.panel.sessionTtlMs,
        })
      : undefined;
  const lockout = createLockout({ clock, ...config.auth.lockout });
  const rateLimits = createRateLimitStages({ clock, ...config.rateLimit, policy: () => policy });
  const inventory = createInventory({
    store,
    clock,
    heartbeatTtlMs: config.cluster.heartbeatIntervalMs * config.cluster.heartbeatMissedIntervals,
    reportClockSkewMs: config.cluster.reportClockSkewMs,
  });
  let simTimer: NodeJS.Timeout | undefined;
  let simNodeIds: string[] = [];
  let sim: Simulation | undefined;
  if (config.simulation.enabled ?? (config.dev.enabled && !config.dev.agents.enabled)) {
    sim = createSimulation({
      ...config.simulation,
      clock,
      fenceDelayMs: config.cluster.fenceDelayMs,
      stateFile:
        config.simulation.stateFile ??
        (config.dev.enabled ? join(config.dev.dataDir, "simulation.json") : undefined),
    });
    const simulated = sim;
    simNodeIds = sim.nodes.map((n) => n.id?.id ?? "");
    if (dev !== undefined)
      await claimDevNodes(store, inventory, simNodeIds, () => "simulation", logger);
    for (const node of sim.nodes) await inventory.register(node, "simulation");
    // The simulation's VMs belong to the tenants its world says, as if a cluster admin had
    // assigned them (first start only: an assignment made since stays). Reports never do.
    for (const id of simNodeIds)
      await inventory.seedTenants(sim.heartbeat(id)?.vms ?? [], "simulation");
    const beatOne = async (id: string) => {
      const health = simulated.heartbeat(id);
      if (health === undefined) return;
      await inventory.heartbeat(health);
      simulated.delivered(id);
    };
    const beat = () => Promise.all(simNodeIds.map(beatOne));
    await beat();
    simTimer = setInterval(() => {
      beat().catch((err: unknown) => logger.warn({ err }, "simulated heartbeats failed"));
    }, config.cluster.heartbeatIntervalMs);
    simTimer.unref();
    for (const fault of config.simulation.faults) {
      if (!simNodeIds.includes(fault.node))
        throw new Error(`simulation.faults: no simulated node ${fault.node}`);
      setTimeout(() => {
        logger.warn({ ...fault }, "simulation: injecting a fault");
        if (fault.kind === "kill") simulated.faults.killNode(fault.node);
        else simulated.faults.partitionNode(fault.node);
      }, fault.afterMs).unref();
    }
    logger.info({ nodes: sim.nodes.length }, "simulated cluster running");
  }

  // Dev mode's nodes as agent processes: each its own simulated hypervisor and directory.
  let devAgentsPlan: DevAgentsPlan | undefined;
  if (dev !== undefined && config.dev.agents.enabled && sim === undefined) {
    devAgentsPlan = await planDevAgents(config, dev, inventory, clock.now());
    simNodeIds = [...devAgentsPlan.nodeIds];
    await claimDevNodes(store, inventory, simNodeIds, (id) => id, logger);
  }

  const storage = await startStorage({
    config,
    store,
    clock,
    inventory,
    logger,
    closing: closing.signal,
    simulatedNodeIds: simNodeIds,
    simulatedVms: devAgentsPlan?.vms,
  });
  const libvirt = libvirtNodes(config, logger);
  // Nodes this process drives itself first; any other node through its agent.
  const executors = createAgentExecutors({
    store,
    inventory,
    operations: createAgentOperations(store, clock),
    clock,
    logger,
    local: createLocalExecutors(
      (id) => sim?.driver(id) ?? libvirt.get(id)?.driver,
      (id) => libvirt.get(id)?.uri ?? "",
    ),
  });
  const reporter =
    libvirt.size === 0
      ? undefined
      : await startDriverReporter({
          inventory,
          nodes: [...libvirt.values()],
          clock,
          logger,
          intervalMs: config.libvirt.reportIntervalMs,
        });
  const clusterMetrics = createClusterMetrics({
    registry: metrics.registry,
    store,
    inventory,
    clock,
    logger,
    closing: closing.signal,
  });
  const runtime = await startClusterRuntime({
    store,
    inventory,
    executors,
    replicas: storage.replicas,
    clock,
    logger,
    fenceDelayMs: config.cluster.fenceDelayMs,
    cpuOvercommit: config.cluster.cpuOvercommit,
    memoryOvercommit: config.cluster.memoryOvercommit,
    runnerLeaseMs: config.cluster.runnerLeaseMs,
    onSettled: (m) => {
      audit
        ?.append(settledAuditFields(m))
        .catch((err: unknown) => logger.error({ err }, "settled migration not audited"));
    },
    failover: config.cluster.failover.enabled
      ? {
          ...config.cluster.failover,
          onDecision: (d) => {
            clusterMetrics.failoverDecision(d);
            audit
              ?.append(failoverAuditFields(d))
              .catch((err: unknown) => logger.error({ err }, "failover decision not audited"));
          },
        }
      : undefined,
  });

  const isNode = async (name: string, signal: AbortSignal) =>
    (await inventory.getNode(name, signal)) !== undefined;
  const domain: ServiceBinding[] = [
    ...createDomainServices({
      inventory,
      storage: storage.storage,
      store,
      clock,
      replicationRunner: storage.runner,
      replicationPolicies: config.storage.replication.policies,
      policyTenants: () =>
        policy.bindings.flatMap((b) => (b.tenant === undefined ? [] : [b.tenant])),
      logger,
      closing: closing.signal,
      runtime,
    }),
    createAccessService({
      policy: () => policy,
      apiKeys,
      bindings: storedBindings,
      roles: storedRoles,
      rotationGraceMs: config.auth.apiKeys.rotationGraceMs,
      isNodeName: (name, signal) =>
        nodeNamed({ store, bindings: storedBindings, policy: () => policy, isNode }, name, signal),
    }),
    ...(audit === undefined ? [] : [createAuditService({ log: audit, closing: closing.signal })]),
    createEnrollmentService({
      store,
      clock,
      ca,
      revocations,
      bindings: storedBindings,
      policy: () => policy,
      lockout,
      certificateDays: config.pki.certificateDays,
      enrollLimit: config.pki.enrollLimit,
      isNode,
    }),
    setUpAgentHub({ config, store, inventory, clock, logger, closing: closing.signal, audit })
      .service,
  ];
  const health = createHealthState(domain.map((s) => s.desc.typeName));
  const healthService = createHealthService(health, closing.signal);
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
  // One pipeline for every adapter: the gRPC server and the panel's Connect listener.
  const stages = [
    ...(auditStages === undefined ? [] : [auditStages.outer]),
    ...(skipRateLimit ? [] : [rateLimits.perSource]),
    createAuthenticationStage({
      apiKeys,
      jwt: () => (panelSessions === undefined ? jwt : withPanelIssuer(panelSessions.verifier, jwt)),
      lockout,
      revocations,
    }),
    ...(skipAuthorization ? [] : [createAuthorizationStage(() => policy, targetResolvers)]),
    ...(skipRateLimit ? [] : [rateLimits.perPrincipal]),
    validationStage,
    ...(auditStages === undefined ? [] : [auditStages.beforeAct]),
  ];
  const server = await startRpcServer({
    listen: config.listen,
    tls,
    tlsOptions: config.tls,
    limits: config.limits,
    services: [...domain, healthService, ...reflection],
    stages,
    observer: metrics.observer,
    logger,
    onConnectionDrop: (reason) => metrics.connectionDropped(reason),
  });
  const panel: PanelServer | undefined =
    panelSessions === undefined
      ? undefined
      : await startPanelServer({
          config: config.panel,
          tls,
          limits: config.limits,
          tlsMinVersion: config.tls.minVersion,
          services: [...domain, healthService],
          stages,
          observer: metrics.observer,
          logger,
          store,
          clock,
          sessions: panelSessions,
          policy: () => policy,
          audit: audit === undefined ? undefined : (f) => audit.append(f),
          devAdmin: dev === undefined ? undefined : { dataDir: dev.dataDir },
        });
  metrics.setConnectionCounter(server.connections);
  if (ca !== undefined) noteExpiry("cluster-ca", ca.certPem);
  metrics.setCertificateExpiry(() => expiries);
  // New handshakes use replaced TLS files without a restart (SIGHUP does the same).
  const reloadTlsFromFiles = (why: string) => {
    try {
      const material = loadTls(config);
      server.reloadTls(material);
      panel?.reloadTls(material);
      logger.info({ why }, "TLS files reloaded");
    } catch (err) {
      logger.error({ err, why }, "TLS files not reloaded; the running ones are kept");
    }
  };
  const paths = tlsPaths(config);
  const unwatch = watchFiles(
    [paths.cert, paths.key, paths.clientCa].filter((p): p is string => p !== undefined),
    () => reloadTlsFromFiles("files changed"),
    logger,
  );
  // The server renews its own certificate from the local CA, two thirds into its life.
  let renewTimer: NodeJS.Timeout | undefined;
  const scheduleRenewal = () => {
    if (ca === undefined || paths.cert === undefined || paths.key === undefined) return;
    const pem = readFileSync(paths.cert, "utf8");
    if (!issuedBy(pem, ca)) return;
    const at = renewalTime(pem);
    renewTimer = setTimeout(
      () => {
        renewServerCertificate(
          ca,
          pem,
          { cert: paths.cert as string, key: paths.key as string },
          clock,
        ).then(
          (fresh) => {
            const old = new X509Certificate(pem);
            ledger
              .renew(
                {
                  serial: old.serialNumber,
                  subject: /CN=([^\n,]+)/.exec(old.subject)?.[1] ?? "",
                  issuer: old.issuer,
                },
                fresh.toString(),
                { issuedBy: "server-renewal", kind: "server" },
              )
              .catch((err: unknown) =>
                logger.warn({ err }, "cannot record the renewed server certificate"),
              );
            logger.info(
              { serial: fresh.serialNumber, notAfter: fresh.validTo },
              "server certificate renewed from the local CA",
            );
            reloadTlsFromFiles("renewed");
            scheduleRenewal();
          },
          (err: unknown) => logger.error({ err }, "server certificate renewal failed"),
        );
      },
      Math.min(2 ** 31 - 1, Math.max(1000, at - clock.now())),
    );
    renewTimer.unref();
  };
  scheduleRenewal();
  if (audit !== undefined) metrics.setAuditStats(() => audit.stats());

  let ready = false;
  let stopping: Promise<void> | undefined;
  const readiness = startReadiness({
    store,
    audit,
    logger,
    onChange: (reasons) => {
      if (ready)
        health.setAll(reasons.length === 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    },
  });
  let http: HttpEndpoints | undefined;
  if (config.metrics.enabled) {
    const at = config.metrics.listen.lastIndexOf(":");
    http = await startHttpEndpoints({
      host: config.metrics.listen.slice(0, at).replace(/^\[|\]$/g, ""),
      port: Number(config.metrics.listen.slice(at + 1)),
      metrics,
      notReady: () =>
        stopping !== undefined ? ["shutting down"] : !ready ? ["starting"] : readiness.reasons(),
      logger,
    });
  }
  const httpAddress =
    http === undefined ? undefined : formatAddress(http.address.address, http.address.port);
  if (dev !== undefined)
    writeDevContext(dev, server.address, await ensureDevOperatorKey(dev, apiKeys, logger), logger);
  if (dev !== undefined && simNodeIds.length > 0)
    await enrollSimulatedNodes(dev, server.address, simNodeIds, logger);
  const devAgents =
    devAgentsPlan === undefined
      ? undefined
      : startDevAgents({ plan: devAgentsPlan, server: server.address, config, logger });
  ready = true;
  health.setAll(
    readiness.reasons().length === 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING,
  );
  logger.info(
    {
      address: server.address,
      httpAddress,
      panelUrl: panel?.url,
      version: packageVersion(),
      dev: dev !== undefined,
      tlsMinVersion: config.tls.minVersion,
    },
    "serving",
  );
  await notifier.ready(`serving on ${server.address}`);

  return {
    grpcAddress: server.address,
    httpAddress,
    panelUrl: panel?.url,
    devPanelPassword: panel?.devAdminPassword,
    dev,
    devAgents,
    async reload() {
      await notifier.reloading();
      let ok = false;
      try {
        const next = options.reloadConfig?.() ?? config;
        const nextPolicy = policyFromConfig(next, devBindings);
        const nextJwt = jwtVerifierFromConfig(next, clock);
        server.reloadTls(loadTls(next));
        configPolicy = nextPolicy;
        rebuildPolicy();
        jwt = nextJwt;
        logger.setLevel(next.log.level);
        for (const key of [
          "listen",
          "limits",
          "metrics",
          "log",
          "dev",
          "simulation",
          "cluster",
          "benchmark",
          "storage",
          "panel",
        ] as const) {
          if (key !== "log" && JSON.stringify(next[key]) !== JSON.stringify(config[key])) {
            logger.warn({ key }, "changed setting takes effect only after a restart");
          }
        }
        if (next.log.file !== config.log.file)
          logger.warn({ key: "log.file" }, "changed setting takes effect only after a restart");
        config = next;
        ok = true;
        logger.info({}, "configuration and TLS files reloaded");
      } catch (err) {
        logger.error({ err }, "reload failed; the running configuration is kept");
      }
      await notifier.ready(`serving on ${server.address}`);
      return ok;
    },
    shutdown(reason) {
      stopping ??= (async () => {
        ready = false;
        readiness.close();
        health.setAll(ServingStatus.NOT_SERVING);
        closing.abort();
        logger.info({ reason, inFlight: server.inFlight() }, "shutting down: draining calls");
        await notifier.stopping();
        if (simTimer !== undefined) clearInterval(simTimer);
        const [{ drained }] = await Promise.all([
          server.shutdown(config.shutdown.drainTimeoutMs),
          panel?.close(),
        ]);
        await runtime.close();
        await devAgents?.stop();
        reporter?.close();
        sim?.close();
        inventory.close();
        unwatch();
        if (renewTimer !== undefined) clearTimeout(renewTimer);
        await http?.close();
        await storage.close();
        // Counted refusals are written before the trail closes.
        await auditStages?.close();
        await audit?.close();
        apiKeys.close();
        storedBindings.close();
        revocations.close();
        storedRoles.close();
        await store.close();
        dataDirLock.release();
        notifier.close();
        if (drained) logger.info({}, "stopped");
        else
          logger.warn(
            { drainTimeoutMs: config.shutdown.drainTimeoutMs },
            "stopped; calls still running at the deadline were cut off",
          );
        logger.flush();
      })();
      return stopping;
    },
  };
}

function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
