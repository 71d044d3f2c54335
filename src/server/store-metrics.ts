import client from "prom-client";
import { toRpcError } from "../core/index.js";
import type { KvStore } from "../store/index.js";

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
type Op = "get" | "put" | "delete" | "range" | "txn" | "revision" | "lease";

/**
 * Wraps a store so every request is timed and every failure counted, by
 * operation and reason (`debvisor_store_request_duration_seconds`,
 * `debvisor_store_errors_total`). Watches are not timed (they are open-ended).
 */
export function instrumentStore(store: KvStore, registry: client.Registry): KvStore {
  const duration = new client.Histogram({
    name: "debvisor_store_request_duration_seconds",
    help: "Latency of state store requests, by operation and backend.",
    labelNames: ["op", "backend"] as const,
    buckets: BUCKETS,
    registers: [registry],
  });
  const errors = new client.Counter({
    name: "debvisor_store_errors_total",
    help: "Failed state store requests, by operation, backend and reason.",
    labelNames: ["op", "backend", "reason"] as const,
    registers: [registry],
  });
  const backend = store.backend;
  const timed = async <T>(op: Op, run: () => Promise<T>): Promise<T> => {
    const end = duration.startTimer({ op, backend });
    try {
      return await run();
    } catch (err) {
      const reason = toRpcError(err).reason;
      // A caller's own cancellation is not a store error.
      if (reason !== "CANCELLED") errors.inc({ op, backend, reason });
      throw err;
    } finally {
      end();
    }
  };
  return {
    backend,
    get: (key, options) => timed("get", () => store.get(key, options)),
    put: (key, value, options) => timed("put", () => store.put(key, value, options)),
    delete: (key, options) => timed("delete", () => store.delete(key, options)),
    range: (prefix, options) => timed("range", () => store.range(prefix, options)),
    txn: (request, options) => timed("txn", () => store.txn(request, options)),
    watch: (prefix, fromRevision, options) => store.watch(prefix, fromRevision, options),
    grantLease: (ttlMs, options) => timed("lease", () => store.grantLease(ttlMs, options)),
    lease: (id, ttlMs) => store.lease(id, ttlMs),
    revision: (options) => timed("revision", () => store.revision(options)),
    close: () => store.close(),
  };
}
