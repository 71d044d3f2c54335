import type { AuditLog } from "../audit/index.js";
import type { Clock, Logger, OpenedResources } from "../core/index.js";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import type { PanelAuditSink } from "../panel/index.js";
import type { KvStore } from "../store/index.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";
import { type HttpEndpoints, startHttpEndpoints } from "./http-endpoints.js";
import type { Metrics } from "./metrics.js";
import { type PanelServer, startPanelServer } from "./panel-server.js";
import { type Readiness, startReadiness } from "./readiness.js";
import { type RpcServer, startRpcServer } from "./rpc-server.js";
import type { DaemonSecurity } from "./security-setup.js";
import type { DaemonServices } from "./services-setup.js";
import type { TlsMaterial } from "./tls-material.js";
import { keepTlsFresh, type TlsFiles } from "./tls-setup.js";

/** Where the daemon is in its life, for /readyz and health. */
export type DaemonPhase = "starting" | "serving" | "stopping";

/** What the daemon's listeners need. */
export interface ServersSetup {
  readonly config: () => Config;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly dev: DevEnvironment | undefined;
  readonly metrics: Metrics;
  readonly audit: AuditLog | undefined;
  /** The panel's sign-in records and refusal counts (the trail and the audit stages'); undefined when audit is off. */
  readonly panelAudit: PanelAuditSink | undefined;
  readonly tlsFiles: TlsFiles;
  /** The TLS material read at start-up. */
  readonly tls: TlsMaterial;
  readonly security: DaemonSecurity;
  readonly services: DaemonServices;
  readonly phase: () => DaemonPhase;
  readonly resources: OpenedResources;
}

/** The daemon's listeners. */
export interface DaemonServers {
  readonly server: RpcServer;
  readonly panel: PanelServer | undefined;
  readonly http: HttpEndpoints | undefined;
  readonly httpAddress: string | undefined;
  readonly readiness: Readiness;
  /** Stops taking calls and drains those in flight (gRPC and panel) up to `drainTimeoutMs`. Once. */
  drain(drainTimeoutMs: number): Promise<{ drained: boolean }>;
}

/**
 * Binds the gRPC port and the panel, keeps their TLS files fresh, starts the
 * readiness probe and binds the loopback HTTP port (/metrics, /healthz, /readyz).
 */
export async function startServers(setup: ServersSetup): Promise<DaemonServers> {
  const { store, clock, logger, dev, metrics, audit, tlsFiles, security, resources } = setup;
  const { domain, health, healthService, reflection, stages } = setup.services;
  const config = setup.config();
  const tls = setup.tls;
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
  let panel: PanelServer | undefined;
  let draining: Promise<{ drained: boolean }> | undefined;
  const drain = (drainTimeoutMs: number) => {
    draining ??= Promise.all([server.shutdown(drainTimeoutMs), panel?.close()]).then(([r]) => r);
    return draining;
  };
  // The panel is drained with the gRPC server.
  resources.push("gRPC server and panel", () => drain(setup.config().shutdown.drainTimeoutMs));
  const panelSessions = security.panelSessions;
  panel =
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
          policy: security.policy,
          rateLimit: config.benchmark.skipRateLimit ? undefined : security.rateLimits.takePrincipal,
          sourceLimit: config.benchmark.skipRateLimit ? undefined : security.rateLimits.takeSource,
          audit: setup.panelAudit,
          guard: (s) => server.guard(s),
          devAdmin: dev === undefined ? undefined : { dataDir: dev.dataDir },
        });
  const reloadable = panel;
  metrics.setConnectionCounter(server.connections);
  if (security.ca !== undefined) tlsFiles.noteExpiry("cluster-ca", security.ca.certPem);
  metrics.setCertificateExpiry(() => tlsFiles.expiries);
  keepTlsFresh({
    files: tlsFiles,
    config: setup.config,
    ca: security.ca,
    ledger: security.ledger,
    revocations: security.revocations,
    clock,
    logger,
    apply: (material) => {
      server.reloadTls(material);
      reloadable?.reloadTls(material);
      // The certificate served before may now be told to agents as revoked.
      security.revokedServers.refresh();
    },
    resources,
  });
  if (audit !== undefined) metrics.setAuditStats(() => audit.stats());

  const readiness = startReadiness({
    store,
    audit,
    logger,
    onChange: (reasons) => {
      if (setup.phase() === "serving")
        health.setAll(reasons.length === 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    },
  });
  resources.push("readiness probe", () => readiness.close());
  let http: HttpEndpoints | undefined;
  if (config.metrics.enabled) {
    const at = config.metrics.listen.lastIndexOf(":");
    http = await startHttpEndpoints({
      host: config.metrics.listen.slice(0, at).replace(/^\[|\]$/g, ""),
      port: Number(config.metrics.listen.slice(at + 1)),
      metrics,
      notReady: () => {
        const phase = setup.phase();
        return phase === "stopping"
          ? ["shutting down"]
          : phase === "starting"
            ? ["starting"]
            : readiness.reasons();
      },
      logger,
    });
    const endpoints = http;
    resources.push("HTTP endpoints", () => endpoints.close());
  }
  const httpAddress =
    http === undefined ? undefined : formatAddress(http.address.address, http.address.port);
  return { server, panel, http, httpAddress, readiness, drain };
}

function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
