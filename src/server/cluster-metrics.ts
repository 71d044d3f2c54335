import { fromBinary } from "@bufbuild/protobuf";
import client from "prom-client";
import type { FailoverDecision, HeartbeatOutcome, Inventory } from "../cluster/index.js";
import type { Clock, Logger } from "../core/index.js";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { ReplicationStatusRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import type { KvStore } from "../store/index.js";
import { registerAuditIntentsGauge } from "./audit-intents-gauge.js";
import { enumLabel as label } from "./enum-label.js";
import { registerInventoryGauges } from "./inventory-gauges.js";
import { registerReplicationGauges } from "./replication-gauges.js";
import { watchFinished } from "./watch-finished.js";

/** Options of {@link createClusterMetrics}. */
export interface ClusterMetricsOptions {
  readonly registry: client.Registry;
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Aborted at shutdown: stops the migration watch. */
  readonly closing: AbortSignal;
}

/** The cluster as Prometheus sees it. */
export interface ClusterMetrics {
  /** Counts a failover controller decision (restarted, skipped, failed). */
  failoverDecision(decision: FailoverDecision): void;
  /** Counts one agent heartbeat received by this daemon, by outcome. */
  agentHeartbeat(outcome: HeartbeatOutcome): void;
}

const TERMINAL = new Set([
  MigrationState.SUCCEEDED,
  MigrationState.FAILED,
  MigrationState.CANCELLED,
]);

/**
 * Cluster metrics: nodes by readiness and VMs by state (read from the
 * inventory at scrape time), migrations by kind and outcome (counted from
 * the store's watch as they finish, so drains and failovers run by any
 * daemon on the store are seen; several daemons on one store each count
 * them), failover controller decisions, and replication lag and failures
 * per job (read from the job status records at scrape time), and the
 * control plane's acts not yet audited (their intents, at scrape time).
 */
export function createClusterMetrics(options: ClusterMetricsOptions): ClusterMetrics {
  const { registry, store, inventory, clock, logger, closing } = options;
  registerInventoryGauges({ registry, inventory, closing });
  registerReplicationGauges({ registry, store, clock, closing });
  registerAuditIntentsGauge({ registry, store, closing });
  const replicationFailures = new client.Counter({
    name: "debvisor_replication_failures_total",
    help: "Failed replication runs seen since start.",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  const migrations = new client.Counter({
    name: "debvisor_migrations_total",
    help: "Finished migrations seen since start, by kind (migrate, drain, failover) and outcome.",
    labelNames: ["kind", "outcome"] as const,
    registers: [registry],
  });
  const failovers = new client.Counter({
    name: "debvisor_failover_decisions_total",
    help: "Failover controller decisions of this daemon, by action (restarted, skipped, failed, adopted, unknown: a start sent and not answered).",
    labelNames: ["action"] as const,
    registers: [registry],
  });
  for (const action of ["restarted", "skipped", "failed", "adopted", "unknown"])
    failovers.inc({ action }, 0);
  const heartbeats = new client.Counter({
    name: "debvisor_agent_heartbeats_total",
    help: "Agent heartbeats received on this daemon's streams, by outcome: confirmed, unconfirmed (the store did not take it in time; the agent counts toward fencing itself), from_future (confirmed, report refused), failed (any other error; the stream ends).",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  for (const outcome of ["confirmed", "unconfirmed", "from_future", "failed"])
    heartbeats.inc({ outcome }, 0);
  void watchFinished(store, closing, logger, (key, value) => {
    if (key.startsWith("migrations/")) {
      const m = fromBinary(MigrationRecordSchema, value).migration;
      if (m === undefined || !TERMINAL.has(m.state)) return undefined;
      return () =>
        migrations.inc({
          kind: label(MigrationKind, m.kind),
          outcome: label(MigrationState, m.state),
        });
    }
    const s = fromBinary(ReplicationStatusRecordSchema, value);
    if (s.consecutiveFailures === 0) return undefined;
    // One failed run is one write with a new failure count.
    return {
      id: `${s.jobId}#${s.consecutiveFailures}#${s.updatedAtMs}`,
      count: () => replicationFailures.inc({ reason: s.lastErrorReason || "unknown" }),
    };
  });
  return {
    failoverDecision(d) {
      failovers.inc({ action: d.action });
    },
    agentHeartbeat(outcome) {
      heartbeats.inc({ outcome });
    },
  };
}
