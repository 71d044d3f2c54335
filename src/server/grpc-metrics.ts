import client from "prom-client";
import {
  type CallContext,
  type CallObserver,
  Code,
  codeName,
  type MethodKind,
} from "../core/index.js";

/**
 * The grpc_type label of go-grpc-prometheus, which dashboards and alerts in
 * the field (the upstream DebVisor dashboard among them) query.
 */
const GRPC_TYPE: Record<MethodKind, string> = {
  unary: "unary",
  server_streaming: "server_stream",
  client_streaming: "client_stream",
  bidi_streaming: "bidi_stream",
};

/** prometheus.DefBuckets, the buckets of go-grpc-prometheus's handling histogram. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The call observer behind /metrics: the standard `grpc_server_*` families
 * with go-grpc-prometheus's names, labels and code spelling (`grpc_code="NotFound"`),
 * plus the daemon's own `debvisor_rpc_*` call metrics.
 */
export function createGrpcMetrics(registry: client.Registry): CallObserver {
  const labels = ["grpc_type", "grpc_service", "grpc_method"] as const;
  const started = new client.Counter({
    name: "grpc_server_started_total",
    help: "Total number of RPCs started on the server.",
    labelNames: labels,
    registers: [registry],
  });
  const handled = new client.Counter({
    name: "grpc_server_handled_total",
    help: "Total number of RPCs completed on the server, regardless of success or failure.",
    labelNames: [...labels, "grpc_code"] as const,
    registers: [registry],
  });
  const handling = new client.Histogram({
    name: "grpc_server_handling_seconds",
    help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    labelNames: labels,
    buckets: DEFAULT_BUCKETS,
    registers: [registry],
  });
  const received = new client.Counter({
    name: "grpc_server_msg_received_total",
    help: "Total number of RPC stream messages received on the server.",
    labelNames: labels,
    registers: [registry],
  });
  const sent = new client.Counter({
    name: "grpc_server_msg_sent_total",
    help: "Total number of gRPC stream messages sent by the server.",
    labelNames: labels,
    registers: [registry],
  });
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
  const grpcLabels = (ctx: CallContext) => ({
    grpc_type: GRPC_TYPE[ctx.method.kind],
    grpc_service: ctx.method.service,
    grpc_method: ctx.method.name,
  });
  return {
    onStart(ctx) {
      inFlight.inc();
      started.inc(grpcLabels(ctx));
    },
    onEnd(ctx, error, durationMs) {
      inFlight.dec();
      const code = error?.code ?? Code.Ok;
      const { service, name } = ctx.method;
      calls.inc({ service, method: name, code: codeName(code) });
      duration.observe({ service, method: name }, durationMs / 1000);
      const l = grpcLabels(ctx);
      // Go's codes.Code.String() spelling: the enum's own names, except "OK".
      handled.inc({ ...l, grpc_code: code === Code.Ok ? "OK" : (Code[code] ?? "Unknown") });
      handling.observe(l, durationMs / 1000);
    },
    onMessage(ctx, direction) {
      (direction === "received" ? received : sent).inc(grpcLabels(ctx));
    },
  };
}
