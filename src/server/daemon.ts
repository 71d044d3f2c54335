import { packageVersion } from "../client/index.js";
import {
  type Clock,
  createOpenedResources,
  type OpenedResources,
  systemClock,
} from "../core/index.js";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { setUpAudit } from "./audit-setup.js";
import { startCluster } from "./cluster-setup.js";
import type { Config } from "./config-schema.js";
import { createDaemonControl, type DaemonState } from "./daemon-control.js";
import { dataDirectories, lockDataDirectories } from "./data-dir-lock.js";
import { type DevAgents, startDevAgents } from "./dev-agents.js";
import {
  type DevEnvironment,
  ensureDevOperatorKey,
  prepareDevEnvironment,
  writeDevContext,
} from "./dev-environment.js";
import { enrollSimulatedNodes } from "./dev-node-enrollment.js";
import { createLogger, type DaemonLogger } from "./logger.js";
import { createMetrics } from "./metrics.js";
import { DEFAULT_AUDIT_PATH } from "./open-audit.js";
import { DEFAULT_SQLITE_PATH, openStore } from "./open-store.js";
import { setUpSecurity } from "./security-setup.js";
import { startServers } from "./servers-setup.js";
import { createDaemonServices } from "./services-setup.js";
import { instrumentStore } from "./store-metrics.js";
import { createSystemdNotifier } from "./systemd-notifier.js";
import { createTlsFiles } from "./tls-setup.js";
import { startVmLifecycle } from "./vm-lifecycle-setup.js";

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

/**
 * Starts the daemon: TLS gRPC endpoint, operational HTTP endpoints, simulation
 * when enabled. Each part pushes what it opens onto one stack of opened
 * resources; when start-up fails midway, everything opened so far is closed,
 * newest first, before the error is thrown (the data directories unlocked
 * last), and shutdown unwinds the same stack after draining calls.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const config = options.config;
  // Before anything is opened or written: a second daemon on these directories stops here.
  const dataDirLock = lockDataDirectories(
    dataDirectories(config, { sqlitePath: DEFAULT_SQLITE_PATH, auditPath: DEFAULT_AUDIT_PATH }),
  );
  let logger: DaemonLogger;
  try {
    logger =
      options.logger ??
      createLogger(config.log.level, config.log.file, config.log.format, options.env ?? {});
  } catch (err) {
    dataDirLock.release();
    throw err;
  }
  const resources = createOpenedResources(logger);
  resources.push("data directory lock", () => dataDirLock.release());
  const closing = new AbortController();
  try {
    return await composeDaemon(options, logger, resources, closing);
  } catch (err) {
    closing.abort();
    await resources.unwind();
    throw err;
  }
}

/** The parts of a daemon, in the order they open. */
async function composeDaemon(
  options: DaemonOptions,
  logger: DaemonLogger,
  resources: OpenedResources,
  closing: AbortController,
): Promise<Daemon> {
  // Start-up composes with the configuration it was given; a reload replaces
  // `state.config`, which the servers and the control read from then on.
  const config = options.config;
  const state: DaemonState = { config, phase: "starting" };
  const env = options.env ?? {};
  const clock = options.clock ?? systemClock;
  const notifier = createSystemdNotifier(env, logger);
  resources.push("systemd notifier", () => notifier.close());

  const dev = config.dev.enabled
    ? await prepareDevEnvironment(config.dev.dataDir, logger)
    : undefined;
  const tlsFiles = createTlsFiles(dev, clock, logger);
  const tls = tlsFiles.load(config);
  const metrics = createMetrics(clock.now);
  const { audit, auditStages } = await setUpAudit(config, dev, logger, metrics, resources);

  const store = instrumentStore(openStore(config, logger), metrics.registry);
  resources.push("store", () => store.close());
  const security = await setUpSecurity({
    config,
    store,
    clock,
    logger,
    dev,
    resources,
    servingSerial: () => tlsFiles.servingSerial(),
  });
  const cluster = await startCluster({
    config,
    store,
    clock,
    logger,
    closing: closing.signal,
    metrics,
    audit,
    resources,
    dev,
    served: tlsFiles,
  });
  const services = createDaemonServices({
    config,
    store,
    clock,
    logger,
    closing: closing.signal,
    audit,
    auditStages,
    security,
    cluster,
  });
  await startVmLifecycle({
    store,
    clock,
    logger,
    closing: closing.signal,
    audit,
    vmRecords: cluster.inventory.vmRecords,
    nodes: cluster.localNodeIds,
    driver: (id) => cluster.executors.forNode(id),
    servedByAgent: (id) => services.agentHub.connectedNodes().includes(id),
    report: (id) => cluster.report(id),
    runners: cluster.runtime.runners,
    operationRetentionMs: config.cluster.operationRetentionMs,
  });
  const { health } = services;
  const servers = await startServers({
    config: () => state.config,
    store,
    clock,
    logger,
    dev,
    metrics,
    audit,
    panelAudit:
      audit === undefined || auditStages === undefined
        ? undefined
        : { append: (f) => audit.append(f), count: (f) => auditStages.count(f) },
    tlsFiles,
    tls,
    security,
    services,
    phase: () => state.phase,
    resources,
  });
  const { server, panel, httpAddress, readiness } = servers;
  services.agentHub.advertise(config.cluster.advertiseAddress ?? server.address);
  if (dev !== undefined)
    writeDevContext(
      dev,
      server.address,
      await ensureDevOperatorKey(dev, security.apiKeys, logger),
      logger,
    );
  if (dev !== undefined && cluster.simNodeIds.length > 0)
    await enrollSimulatedNodes(dev, server.address, cluster.simNodeIds, logger);
  const devAgents =
    cluster.devAgentsPlan === undefined
      ? undefined
      : startDevAgents({ plan: cluster.devAgentsPlan, server: server.address, config, logger });
  if (devAgents !== undefined) resources.push("dev agents", () => devAgents.stop());
  state.phase = "serving";
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

  const control = createDaemonControl({
    state,
    options,
    logger,
    notifier,
    security,
    tlsFiles,
    servers,
    health,
    closing,
    resources,
  });
  return {
    grpcAddress: server.address,
    httpAddress,
    panelUrl: panel?.url,
    devPanelPassword: panel?.devAdminPassword,
    dev,
    devAgents,
    reload: control.reload,
    shutdown: control.shutdown,
  };
}
