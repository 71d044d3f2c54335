import client from "prom-client";
import {
  createEventLog,
  createEventRecorder,
  createEventTenants,
  type EventLog,
  type EventRecorder,
  type Inventory,
} from "../cluster/index.js";
import type { Clock, Logger } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import type { Config } from "./config-schema.js";

/** The daemon's events: the log EventService reads and the recorder the cluster tells. */
export interface ClusterEvents {
  readonly log: EventLog;
  readonly recorder: EventRecorder;
  /** Where tenants of objects come from, once the inventory exists. */
  useInventory(inventory: Inventory): void;
}

/**
 * Opens the event log with `cluster.events` retention and starts its
 * recorder, with its counters as metrics: `debvisor_events_recorded_total`
 * and `debvisor_events_dropped_total{reason="queue_full"|"store_error"}`.
 */
export function startClusterEvents(options: {
  config: Config;
  store: KvStore;
  clock: Clock;
  logger: Logger;
  registry: client.Registry;
}): ClusterEvents {
  const { store, clock, logger, registry } = options;
  const settings = options.config.cluster.events;
  const log = createEventLog({
    store,
    clock,
    maxCount: settings.maxCount,
    maxAgeMs: settings.maxAgeMs,
  });
  let tenants: ReturnType<typeof createEventTenants> | undefined;
  const recorder = createEventRecorder({
    log,
    clock,
    logger,
    queueMax: settings.queueMax,
    repeatWindowMs: settings.repeatWindowMs,
    resolveTenant: async (kind, id, signal) => (await tenants?.(kind, id, signal)) ?? "",
  });
  new client.Counter({
    name: "debvisor_events_recorded_total",
    help: "Cluster events this daemon wrote to the store.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(recorder.stats().recorded);
    },
  });
  new client.Counter({
    name: "debvisor_events_dropped_total",
    help: "Cluster events this daemon dropped: its queue was full (queue_full) or the store refused them (store_error).",
    labelNames: ["reason"] as const,
    registers: [registry],
    collect() {
      const s = recorder.stats();
      this.reset();
      this.inc({ reason: "queue_full" }, s.droppedQueueFull);
      this.inc({ reason: "store_error" }, s.droppedStoreError);
    },
  });
  return {
    log,
    recorder,
    useInventory(inventory) {
      tenants = createEventTenants({ inventory, store });
    },
  };
}
