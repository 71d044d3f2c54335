import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { AuditLog } from "../audit/index.js";
import {
  type AgentHub,
  createAgentHub,
  type Inventory,
  renewalSlackMs,
  selfFenceWindowMs,
} from "../cluster/index.js";
import type { Clock, Logger } from "../core/index.js";
import type { RevokedServerCertificates } from "../security/index.js";
import type { KvStore } from "../store/index.js";
import type { ClusterMetrics } from "./cluster-metrics.js";
import type { Config } from "./config-schema.js";
import { agentRefusedAuditFields } from "./system-audit.js";

/** What the agent hub needs from the daemon. */
export interface AgentHubSetup {
  readonly config: Config;
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The daemon's shutdown: agents' streams end and they reconnect elsewhere. */
  readonly closing: AbortSignal;
  readonly audit: AuditLog | undefined;
  readonly metrics: Pick<ClusterMetrics, "agentHeartbeat">;
  /** The server certificates agents are told to refuse. */
  readonly revokedServers: RevokedServerCertificates;
}

/**
 * The control plane's end of node agents' streams (AgentService), with
 * refused streams written to the audit trail as `agent.refused`.
 */
export function setUpAgentHub(setup: AgentHubSetup): AgentHub {
  const { config, logger, audit } = setup;
  const windowMs = selfFenceWindowMs(config.cluster.fenceDelayMs, config.cluster.selfFenceWindowMs);
  const heartbeatIntervalMs = config.cluster.heartbeatIntervalMs;
  const slackMs = renewalSlackMs(windowMs, heartbeatIntervalMs);
  if (slackMs < heartbeatIntervalMs) {
    const raise =
      config.cluster.selfFenceWindowMs === undefined
        ? "cluster.fenceDelayMs (the window is two thirds of it)"
        : "cluster.selfFenceWindowMs (and cluster.fenceDelayMs with it)";
    logger.warn(
      { selfFenceWindowMs: windowMs, heartbeatIntervalMs, slackMs },
      `the self-fence window leaves less than one heartbeat interval for a late lease renewal: a slow control plane makes agents stop their HA vms; raise ${raise} or lower cluster.heartbeatIntervalMs`,
    );
  }
  return createAgentHub({
    store: setup.store,
    inventory: setup.inventory,
    clock: setup.clock,
    // Unique per process start: two daemons in containers on one host share the host name
    // and often the pid (1); with one id each took the other's agent presence for its own
    // and never ended a stream the other had taken over, and their transfer relays mixed.
    serverId: `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`,
    heartbeatIntervalMs,
    selfFenceWindowMs: windowMs,
    livenessTtlMs: heartbeatIntervalMs * config.cluster.heartbeatMissedIntervals,
    helloTimeoutMs: config.agents.helloTimeoutMs,
    sendQueueMax: config.agents.sendQueueMax,
    messageRate: config.agents.messageRate,
    logger,
    closing: setup.closing,
    onRefused: (refusal) => {
      audit
        ?.append(agentRefusedAuditFields(refusal))
        .catch((err: unknown) => logger.error({ err }, "refused agent stream not audited"));
    },
    onHeartbeat: (outcome) => setup.metrics.agentHeartbeat(outcome),
    revokedServers: setup.revokedServers,
  });
}
