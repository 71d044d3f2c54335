/**
 * The replication metrics read from the job status records at scrape time:
 * each job's lag since its last success and its failed runs since then.
 */
import client from "prom-client";
import type { Clock } from "../core/index.js";
import {
  type ReplicationStatusRecord,
  ReplicationStatusRecordSchema,
} from "../gen/debvisor/store/v1/storage_records_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";

/** Dependencies of {@link registerReplicationGauges}. */
export interface ReplicationGaugesDeps {
  readonly registry: client.Registry;
  readonly store: KvStore;
  readonly clock: Clock;
  /** Aborted at shutdown: ends reads in progress. */
  readonly closing: AbortSignal;
}

/** Registers debvisor_replication_lag_seconds and debvisor_replication_consecutive_failures on the registry. */
export function registerReplicationGauges(deps: ReplicationGaugesDeps): void {
  const { registry, store, clock, closing } = deps;
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
}
