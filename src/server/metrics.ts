import client from "prom-client";
import { type CallObserver, codeName } from "../core/index.js";

/** Prometheus metrics of the daemon and the call observer that feeds them. */
export interface Metrics {
  readonly registry: client.Registry;
  readonly observer: CallObserver;
  /** Sets the function that reports open connections at scrape time. */
  setConnectionCounter(count: () => number): void;
  /** Sets the function that reports when each configured certificate expires (epoch ms, by name). */
  setCertificateExpiry(notAfterMs: () => Readonly<Record<string, number>>): void;
  /** Sets the function that reports the audit trail's counters at scrape time. */
  setAuditStats(
    stats: () => { records: number; syncs: number; failing: boolean; failures: number },
  ): void;
}

/** Creates a private registry (no global state) with call, latency, in-flight and connection metrics. */
export function createMetrics(): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "debvisor_rpcd_" });
  const calls = new client.Counter({
    name: "debvisor_rpc_calls_total",
    help: "RPC calls finished, by method and gRPC code.",
    labelNames: ["service", "method", "code"] as const,
    registers: [registry],
  });
  const duration = new client.Histogram({
    name: "debvisor_rpc_call_duration_seconds",
    help: "RPC call latency from arrival to response, by method.",
    labelNames: ["service", "method"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const inFlight = new client.Gauge({
    name: "debvisor_rpc_calls_in_flight",
    help: "RPC calls started and not yet finished.",
    registers: [registry],
  });
  let countConnections: () => number = () => 0;
  new client.Gauge({
    name: "debvisor_rpc_connections",
    help: "Open HTTP/2 connections on the RPC port.",
    registers: [registry],
    collect() {
      this.set(countConnections());
    },
  });
  let auditStats: () => { records: number; syncs: number; failing: boolean; failures: number } =
    () => ({
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
      this.set(auditStats().failing ? 1 : 0);
    },
  });
  new client.Gauge({
    name: "debvisor_audit_records",
    help: "Audit records made durable since start.",
    registers: [registry],
    collect() {
      this.set(auditStats().records);
    },
  });
  new client.Gauge({
    name: "debvisor_audit_fsyncs",
    help: "fsyncs of the audit trail since start (records / fsyncs = group commit size).",
    registers: [registry],
    collect() {
      this.set(auditStats().syncs);
    },
  });
  new client.Gauge({
    name: "debvisor_audit_write_failures",
    help: "Failed audit writes since start.",
    registers: [registry],
    collect() {
      this.set(auditStats().failures);
    },
  });
  let certNotAfter: () => Readonly<Record<string, number>> = () => ({});
  new client.Gauge({
    name: "debvisor_certificate_expiry_seconds",
    help: "Seconds until a configured certificate expires, by certificate (server, client-ca, cluster-ca); alert below 30 days.",
    labelNames: ["certificate"] as const,
    registers: [registry],
    collect() {
      for (const [certificate, at] of Object.entries(certNotAfter())) {
        if (at > 0) this.set({ certificate }, Math.round((at - Date.now()) / 1000));
      }
    },
  });
  return {
    registry,
    observer: {
      onStart() {
        inFlight.inc();
      },
      onEnd(ctx, error, durationMs) {
        inFlight.dec();
        const { service, name } = ctx.method;
        calls.inc({ service, method: name, code: codeName(error?.code ?? 0) });
        duration.observe({ service, method: name }, durationMs / 1000);
      },
    },
    setConnectionCounter(count) {
      countConnections = count;
    },
    setCertificateExpiry(notAfterMs) {
      certNotAfter = notAfterMs;
    },
    setAuditStats(stats) {
      auditStats = stats;
    },
  };
}
