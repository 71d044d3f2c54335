import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import client from "prom-client";
import type { FailoverDecision, HeartbeatOutcome, Inventory } from "../cluster/index.js";
import type { Clock, Logger } from "../core/index.js";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";

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
/** Ids of finished migrations already counted (a finished record may be written again). */
const REMEMBERED = 10_000;

/** Lower-case label value of an enum member (`NOT_READY` -> `not_ready`). */
function label(names: Record<number, string>, value: number): string {
  return (names[value] ?? "unspecified").toLowerCase();
}

/**
 * Cluster metrics: nodes by readiness and VMs by state (read from the
 * inventory at scrape time), migrations by kind and outcome (counted from
 * the store's watch as they finish, so drains and failovers run by any
 * daemon on the store are seen; several daemons on one store each count
 * them), failover controller decisions, and replication lag and failures
 * per job (read from the job status records at scrape time).
 */
export function createClusterMetrics(options: ClusterMetricsOptions): ClusterMetrics {
  const { registry, store, inventory, clock, logger, closing } = options;
  /**
   * One listing of the nodes, shared by the gauges of one scrape: prom-client
   * collects them all at once, and each listing costs tens of milliseconds
   * of event loop at 10,000 nodes.
   */
  let listing: ReturnType<Inventory["listNodes"]> | undefined;
  const nodes = () => {
    listing ??= inventory.listNodes(closing).finally(() => {
      listing = undefined;
    });
    return listing;
  };
  new client.Gauge({
    name: "debvisor_nodes",
    help: "Nodes known to the inventory, by readiness.",
    labelNames: ["readiness"] as const,
    registers: [registry],
    async collect() {
      const counts = new Map<string, number>([
        ["ready", 0],
        ["not_ready", 0],
      ]);
      for (const n of await nodes()) {
        const r = label(NodeReadiness, n.readiness);
        counts.set(r, (counts.get(r) ?? 0) + 1);
      }
      this.reset();
      for (const [readiness, n] of counts) this.set({ readiness }, n);
    },
  });
  new client.Gauge({
    name: "debvisor_node_report_skew_seconds",
    help: "How far each node's newest report's timestamp was ahead of the receiving server's clock (negative: behind). Shown, never trusted: readiness follows the node's lease.",
    labelNames: ["node"] as const,
    registers: [registry],
    async collect() {
      const listed = await nodes();
      this.reset();
      for (const n of listed)
        this.set({ node: n.info?.id?.id ?? "" }, Number(n.reportSkewMs) / 1000);
    },
  });
  new client.Gauge({
    name: "debvisor_vms",
    help: "VMs the nodes report, by state.",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const counts = new Map<string, number>();
      for (const s of [VmState.RUNNING, VmState.STOPPED, VmState.CRASHED])
        counts.set(label(VmState, s), 0);
      for (const [state, n] of await inventory.vmsByState(closing)) {
        const s = label(VmState, state);
        counts.set(s, (counts.get(s) ?? 0) + n);
      }
      this.reset();
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new client.Gauge({
    name: "debvisor_vm_conflicts",
    help: "Stale copies of VMs: copies reported by a node other than the one the VM is placed on (each is stopped and undefined once).",
    registers: [registry],
    async collect() {
      let n = 0;
      for (const rec of await inventory.conflicts(closing)) n += rec.staleCopies.length;
      this.set(n);
    },
  });
  const statuses = async () => {
    const out: ReplicationStatusRecord[] = [];
    for await (const kv of rangeAll(store, "replication/status/", { signal: closing }))
      out.push(decodeMessage(ReplicationStatusRecordSchema, kv));
    return out;
  };
  new client.Gauge({
    name: "debvisor_replication_lag_seconds",
    help: "Seconds since a replication job's last successful run (since its last status change when it has none).",
    labelNames: ["job_id"] as const,
    registers: [registry],
    async collect() {
      const list = await statuses();
      const now = clock.now();
      this.reset();
      for (const s of list) {
        const since = Number(s.lastSuccessAtMs) || Number(s.updatedAtMs);
        if (since > 0) this.set({ job_id: s.jobId }, Math.max(0, (now - since) / 1000));
      }
    },
  });
  new client.Gauge({
    name: "debvisor_replication_consecutive_failures",
    help: "Failed runs of a replication job since its last success.",
    labelNames: ["job_id"] as const,
    registers: [registry],
    async collect() {
      const list = await statuses();
      this.reset();
      for (const s of list) this.set({ job_id: s.jobId }, s.consecutiveFailures);
    },
  });
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
    help: "Failover controller decisions of this daemon, by action (restarted, skipped, failed).",
    labelNames: ["action"] as const,
    registers: [registry],
  });
  for (const action of ["restarted", "skipped", "failed"]) failovers.inc({ action }, 0);
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

type Counted = (() => void) | { id: string; count: () => void } | undefined;

/**
 * Follows migration records and replication status records from now on and
 * counts each finished one once. Restarts from the current revision after
 * an error (a missed event is a missed count, never a double one).
 */
async function watchFinished(
  store: KvStore,
  closing: AbortSignal,
  logger: Logger,
  classify: (key: string, value: Uint8Array) => Counted,
): Promise<void> {
  const seen = new Set<string>();
  const remember = (id: string) => {
    if (seen.has(id)) return false;
    seen.add(id);
    if (seen.size > REMEMBERED) seen.delete(seen.values().next().value as string);
    return true;
  };
  const follow = async (prefix: string) => {
    while (!closing.aborted) {
      try {
        const from = (await store.revision({ signal: closing })) + 1;
        for await (const ev of store.watch(prefix, from, { signal: closing })) {
          if (ev.type !== "put") continue;
          let c: Counted;
          try {
            c = classify(ev.key, ev.value);
          } catch {
            continue; // an undecodable record is the reader's problem, not the metrics'
          }
          if (c === undefined) continue;
          if (typeof c === "function") {
            if (remember(ev.key)) c();
          } else if (remember(c.id)) c.count();
        }
      } catch (err) {
        if (closing.aborted) return;
        logger.warn({ err, prefix }, "metrics: store watch failed; following again");
        await sleep(1000, undefined, { signal: closing }).catch(() => undefined);
      }
    }
  };
  await Promise.all([follow("migrations/"), follow("replication/status/")]);
}
