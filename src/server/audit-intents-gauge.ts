/**
 * How many of the control plane's own acts (a stale copy removed, an HA VM
 * started again) are not yet in the audit trail: their intents in the store,
 * counted at scrape time. Above zero for long, the trail refuses them or no
 * controller is telling them (docs/cluster.md, audit intents).
 */
import client from "prom-client";
import { AUDIT_INTENTS } from "../cluster/index.js";
import { type KvStore, rangeAll } from "../store/index.js";

/**
 * Counted up to this many, "at least" beyond: each scrape reads the intents
 * (about 0.3 s per 10,000 on SQLite), and /metrics must answer within a
 * scrape timeout when the pile is large.
 */
export const MAX_COUNTED_INTENTS = 10_000;

/** Dependencies of {@link registerAuditIntentsGauge}. */
export interface AuditIntentsGaugeDeps {
  readonly registry: client.Registry;
  readonly store: KvStore;
  /** Aborted at shutdown: ends a count in progress. */
  readonly closing: AbortSignal;
}

/** Registers debvisor_audit_intents_pending on the registry. */
export function registerAuditIntentsGauge(deps: AuditIntentsGaugeDeps): void {
  const { registry, store, closing } = deps;
  new client.Gauge({
    name: "debvisor_audit_intents_pending",
    help: `The control plane's acts (stale copies removed, HA VMs started again) not yet in the audit trail, for the whole store (every daemon on it shows the same count; at most ${MAX_COUNTED_INTENTS}).`,
    registers: [registry],
    async collect() {
      let count = 0;
      for await (const _ of rangeAll(store, AUDIT_INTENTS, { signal: closing }))
        if (++count >= MAX_COUNTED_INTENTS) break;
      this.set(count);
    },
  });
}
