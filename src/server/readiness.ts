import type { AuditLog } from "../audit/index.js";
import type { Logger } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { auditWritableFields } from "./system-audit.js";

/** The key the readiness probe writes; every daemon overwrites the same one. */
export const PROBE_KEY = "health/probe";

/** Options of {@link startReadiness}. */
export interface ReadinessOptions {
  readonly store: KvStore;
  readonly audit: AuditLog | undefined;
  readonly logger: Logger;
  /** How often the store is written and the trail checked (default 2000). */
  readonly intervalMs?: number;
  /** Called whenever the list of reasons changes. */
  readonly onChange: (reasons: readonly string[]) => void;
}

/** Why the daemon cannot serve every call right now; empty when it can. */
export interface Readiness {
  reasons(): readonly string[];
  close(): void;
}

/**
 * Proves, on a timer, that the daemon can write what every mutating call
 * writes: a small put to the store (bounded by the interval) and, while the
 * audit trail is failing, one `audit.writable` record (the trail recovers
 * only by a write that succeeds, so the probe is what lets an idle daemon
 * notice the disk has room again). The reasons feed /readyz and grpc.health.v1.
 */
export function startReadiness(options: ReadinessOptions): Readiness {
  const interval = options.intervalMs ?? 2000;
  let storeProblem: string | undefined;
  let auditProblem: string | undefined;
  let last = "";
  let closed = false;
  const reasons = () => [storeProblem, auditProblem].filter((r): r is string => r !== undefined);
  const publish = () => {
    const now = reasons();
    if (now.join("\n") === last) return;
    last = now.join("\n");
    if (now.length > 0) options.logger.warn({ reasons: now }, "not ready");
    else options.logger.info({}, "ready again");
    options.onChange(now);
  };
  const probeStore = async () => {
    try {
      await options.store.put(PROBE_KEY, new TextEncoder().encode(String(Date.now())), {
        signal: AbortSignal.timeout(interval),
      });
      storeProblem = undefined;
    } catch (err) {
      storeProblem = `state store cannot be written: ${(err as Error).message}`;
      options.logger.debug({ err }, "readiness probe: store write failed");
    }
  };
  const probeAudit = async () => {
    const audit = options.audit;
    if (audit === undefined) return;
    if (audit.stats().failing) {
      try {
        await audit.append(auditWritableFields());
      } catch {
        // still failing; stats() says so
      }
    }
    auditProblem = audit.stats().failing ? "audit trail cannot be written" : undefined;
  };
  let timer: NodeJS.Timeout | undefined;
  const tick = async () => {
    await Promise.all([probeStore(), probeAudit()]);
    if (closed) return;
    publish();
    timer = setTimeout(() => void tick(), interval);
    timer.unref();
  };
  void tick();
  return {
    reasons,
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
