/**
 * The chaos cluster's configuration and the bounds the checker holds it to.
 * Every liveness bound is built from the configuration (heartbeat TTL,
 * fence delay, self-fence window, runner lease) plus one stated slack for
 * a loaded machine; docs/cluster.md (The chaos test) states them.
 */
export const CHAOS_TIMING = {
  heartbeatIntervalMs: 1000,
  heartbeatMissedIntervals: 2,
  selfFenceWindowMs: 4000,
  fenceDelayMs: 6000,
  failoverIntervalMs: 500,
  runnerLeaseMs: 3000,
  migrationMs: 1200,
  /** The agents' reconnect backoff ceiling. */
  reconnectMaxMs: 1000,
} as const;

const T = CHAOS_TIMING;
/** A node's liveness lease. */
export const TTL_MS = T.heartbeatIntervalMs * T.heartbeatMissedIntervals;
/** The agents' fencing tick: a quarter window, at most 1 s. */
export const FENCE_TICK_MS = Math.min(1000, Math.floor(T.selfFenceWindowMs / 4));
/** What a loaded shared machine (load average 10 to 20) adds to any step. */
export const LOAD_SLACK_MS = 10_000;
/**
 * The most time a node's last renewal can take to count as past the fence
 * delay: TTL + fence delay + TTL/3 (the fence key's lease), plus a second
 * for etcd rounding leases up to whole seconds.
 */
export const FENCE_CYCLE_MS = TTL_MS + T.fenceDelayMs + Math.ceil(TTL_MS / 2) + 1000;

export const CHAOS_BOUNDS = {
  /**
   * A copy of a VM that lost its disk lock to another node, on a node whose
   * agent runs, is stopped within the fencing tick (storage fencing); it
   * counts as running twice only after this long.
   */
  staleCopyStopMs: FENCE_TICK_MS + 2000,
  /**
   * After every fault has healed, each HA VM that should run runs exactly
   * once within: a full fence cycle (a daemon restarted at the heal counts
   * no node past the fence delay for its first TTL + fence delay), the
   * self-fence window, the runner lease (orphaned migrations settle), a
   * failover pass, two migrations, the agents' reconnect, and the slack.
   */
  haRestoreMs:
    FENCE_CYCLE_MS +
    T.selfFenceWindowMs +
    T.runnerLeaseMs +
    T.failoverIntervalMs +
    2 * T.migrationMs +
    T.reconnectMaxMs +
    LOAD_SLACK_MS,
  /**
   * After the heal, every operation and migration is final within: the
   * runner lease (its runner died), a fence cycle (its node was down), two
   * migrations (settling asks the agents and waits for the job) and the slack.
   */
  operationFinalMs: T.runnerLeaseMs + FENCE_CYCLE_MS + 2 * T.migrationMs + LOAD_SLACK_MS,
  /**
   * After the settle, no migration record is still marked untold within: a
   * dead runner's lease, two reconcile passes (every half lease) to claim it,
   * its tell, and the slack (src/cluster/migration-settle-tell.ts).
   */
  auditedMs: 3 * T.runnerLeaseMs + LOAD_SLACK_MS,
  /** The checker's period. */
  sampleMs: 200,
} as const;
