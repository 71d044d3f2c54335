import { type AuditLog, type AuditStages, createAuditStages } from "../audit/index.js";
import type { Logger, OpenedResources } from "../core/index.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";
import type { Metrics } from "./metrics.js";
import { openAudit } from "./open-audit.js";

/** The audit trail and its pipeline stages; both undefined when `audit.enabled` is false. */
export interface DaemonAudit {
  readonly audit: AuditLog | undefined;
  readonly auditStages: AuditStages | undefined;
}

/**
 * Opens the audit trail and builds its stages. On unwind the stages close
 * first (counted refusals are written before the trail closes).
 */
export async function setUpAudit(
  config: Config,
  dev: DevEnvironment | undefined,
  logger: Logger,
  metrics: Metrics,
  resources: OpenedResources,
): Promise<DaemonAudit> {
  if (!config.audit.enabled) return { audit: undefined, auditStages: undefined };
  const audit = await openAudit(config, dev?.dataDir, logger, metrics.observeAuditSync);
  resources.push("audit trail", () => audit.close());
  const auditStages = createAuditStages({
    log: audit,
    allowReadsWhenFailing: config.audit.allowReadsWhenFailing,
    refusalIntervalMs: config.audit.refusals.intervalMs,
    refusalMaxSources: config.audit.refusals.maxSources,
    logger,
  });
  resources.push("audit stages", () => auditStages.close());
  return { audit, auditStages };
}
