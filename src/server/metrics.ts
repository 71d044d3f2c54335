import client from "prom-client";
import type { CallObserver } from "../core/index.js";
import { createGrpcMetrics } from "./grpc-metrics.js";

/** What the audit trail reports at scrape time (its running totals since start). */
export interface AuditMetricsSource {
  readonly records: number;
  readonly syncs: number;
  readonly failing: boolean;
  readonly failures: number;
}

/**
 * Prometheus metrics of the daemon and the call observer that feeds them.
 * Running totals are counters (`_total`), current values gauges; names pass
 * `promtool check metrics`. Cluster and store metrics are added by
 * cluster-metrics.ts and store-metrics.ts on the same registry.
 */
export interface Metrics {
  readonly registry: client.Registry;
  readonly observer: CallObserver;
  /** Sets the function that reports open connections at scrape time. */
  setConnectionCounter(count: () => number): void;
  /** Sets the function that reports when each configured certificate expires (epoch ms, by name). */
  setCertificateExpiry(notAfterMs: () => Readonly<Record<string, number>>): void;
  /** Sets the function that reports the audit trail's counters at scrape time. */
  setAuditStats(stats: () => AuditMetricsSource): void;
  /** Records how long one audit write took, fsync included. */
  observeAuditSync(durationMs: number): void;
  /**
   * Counts a connection the daemon closed before it authenticated, by why
   * (`total_limit`, `per_source_limit`, `credential_deadline`, ...). The
   * connection-limit code calls this for every drop; operators alert on its rate.
   */
  connectionDropped(reason: string): void;
}

/** Creates a private registry (no global state) with call, latency, in-flight and connection metrics. */
export function createMetrics(now: () => number = Date.now): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "debvisor_rpcd_" });
  // prom-client names three gauges `_total`, which promtool (rightly) refuses; the
  // unsuffixed `nodejs_active_resources` gauge says the same.
  for (const name of ["active_handles_total", "active_requests_total", "active_resources_total"])
    registry.removeSingleMetric(`debvisor_rpcd_nodejs_${name}`);
  const observer = createGrpcMetrics(registry);
  let countConnections: () => number = () => 0;
  new client.Gauge({
    name: "debvisor_rpc_connections",
    help: "Open HTTP/2 connections on the RPC port.",
    registers: [registry],
    collect() {
      this.set(countConnections());
    },
  });
  const dropped = new client.Counter({
    name: "debvisor_rpc_connections_dropped_total",
    help: "Connections and streams cut off before their first message, by reason (total, per-address, first-message-deadline).",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  // Present at zero from the start, so an alert on rate() sees the first drop.
  for (const reason of ["total", "per-address", "first-message-deadline"])
    dropped.inc({ reason }, 0);
  let audit: () => AuditMetricsSource = () => ({
    records: 0,
    syncs: 0,
    failing: false,
    failures: 0,
  });
  new client.Gauge({
    name: "debvisor_audit_failing",
    help: "1 while the audit trail cannot be written (calls are refused).",
    registers: [registry],
    collect() {
      this.set(audit().failing ? 1 : 0);
    },
  });
  const total = (name: string, help: string, read: (s: AuditMetricsSource) => number) =>
    new client.Counter({
      name,
      help,
      registers: [registry],
      collect() {
        // The audit log keeps the running total; mirror it (it only grows).
        this.reset();
        this.inc(read(audit()));
      },
    });
  total(
    "debvisor_audit_records_total",
    "Audit records made durable since start.",
    (s) => s.records,
  );
  total(
    "debvisor_audit_fsyncs_total",
    "fsyncs of the audit trail since start (records / fsyncs = group commit size).",
    (s) => s.syncs,
  );
  total(
    "debvisor_audit_write_failures_total",
    "Failed audit writes since start.",
    (s) => s.failures,
  );
  const auditSync = new client.Histogram({
    name: "debvisor_audit_fsync_duration_seconds",
    help: "Time to write and fsync one group of audit records.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  let certNotAfter: () => Readonly<Record<string, number>> = () => ({});
  new client.Gauge({
    name: "debvisor_certificate_expiry_seconds",
    help: "Seconds until a configured certificate expires, by certificate (server, client-ca, cluster-ca); alert below 30 days.",
    labelNames: ["certificate"] as const,
    registers: [registry],
    collect() {
      for (const [certificate, at] of Object.entries(certNotAfter())) {
        if (at > 0) this.set({ certificate }, Math.round((at - now()) / 1000));
      }
    },
  });
  return {
    registry,
    observer,
    setConnectionCounter(count) {
      countConnections = count;
    },
    setCertificateExpiry(notAfterMs) {
      certNotAfter = notAfterMs;
    },
    setAuditStats(stats) {
      audit = stats;
    },
    observeAuditSync(durationMs) {
      auditSync.observe(durationMs / 1000);
    },
    connectionDropped(reason) {
      dropped.inc({ reason });
    },
  };
}
