/**
 * The automatic failover loop of the daemon: every `intervalMs` it takes or
 * keeps the leadership (failover-leadership.ts) and, while leading, runs a
 * pass (failover-pass.ts) over stale copies, placements and HA VMs.
 */
import { type Clock, type Logger, nodeKey } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { createAuditIntents } from "./audit-intents.js";
import { createFailedTargets } from "./failed-targets.js";
import type { FailoverDeps } from "./failover.js";
import { createFailoverDecisions, type FailoverDecision } from "./failover-decisions.js";
import { createFailoverLeadership } from "./failover-leadership.js";
import { createFailoverPass } from "./failover-pass.js";
import { createHaRestore } from "./ha-restore.js";
import { START_BOUND_MS } from "./ha-restore-start.js";
import { createPlacementReconciler } from "./placement-from-truth.js";
import type { RunnerRegistry } from "./runner-registry.js";
import { reportedHolding, reportedReady } from "./stale-copies.js";
import {
  createStaleCopyRemover,
  REMOVAL_TIMEOUT_MS,
  type StaleCopyDecision,
} from "./stale-copy-removal.js";

export type { FailoverDecision } from "./failover-decisions.js";

/** How long close() waits for the pass under way to end before resigning. */
const CLOSE_WAIT_MS = 10_000;

/** Options of {@link startFailoverController}. */
export interface FailoverControllerOptions extends FailoverDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This process's runner id: the leader key's value. */
  readonly runnerId: string;
  /** How often the controller looks (default 2000 ms). */
  readonly intervalMs?: number;
  /** Automatic restarts of one VM within the window before it is left alone (default 3). */
  readonly restartLimit?: number;
  readonly restartWindowMs?: number;
  /** HA VMs a pass restarts (or marks, or restores) at once (default 4). */
  readonly maxParallel?: number;
  /** TTL of the leadership lease (default 10 000 ms). */
  readonly leaseTtlMs?: number;
  readonly onDecision?: (decision: FailoverDecision) => Promise<void> | void;
  /** Told of each stale copy of a VM the controller had removed (for the audit trail). */
  readonly onStaleCopy?: (decision: StaleCopyDecision) => Promise<void> | void;
  /** A restart's record is marked untold until told (failover-pass.ts): there is a trail to tell it again. */
  readonly markRestarts?: boolean;
  /**
   * The trail's hearing of a decision told again (audit only, nothing
   * counted): with it, each HA start is kept as an intent until told.
   */
  readonly onRestartUntold?: (decision: FailoverDecision) => Promise<void> | void;
  /**
   * Whether other processes are alive: with `onStaleCopy` (a trail), each
   * stale copy's removal is written as an intent until told (audit-intents.ts).
   */
  readonly runners?: Pick<RunnerRegistry, "id" | "isAlive">;
  /** A tell of the trail not answered within this counts as refused (default 60 s). */
  readonly auditTellTimeoutMs?: number;
  /** How long one stale copy's removal is waited for (default 30 s). */
  readonly removalTimeoutMs?: number;
}

/** The automatic failover loop of the daemon. */
export interface FailoverController {
  /** Whether this process holds the leadership now. */
  isLeader(): boolean;
  /** One pass: take or keep the leadership, then restart what must be. */
  tick(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the controller. Only the holder of the `controllers/failover` key,
 * attached to a lease it keeps alive, acts; it is taken with a
 * create-if-absent transaction, so two daemons sharing one store never both
 * act. HA VMs of nodes NOT_READY for longer than the fence delay restart on
 * the best node with room; HA VMs a node stopped while cut off and came
 * back with start again there (ha-restore.ts); either at most
 * `restartLimit` times per window each.
 */
export function startFailoverController(options: FailoverControllerOptions): FailoverController {
  const { store, clock, logger, runnerId } = options;
  const intervalMs = options.intervalMs ?? 2000;
  const limit = options.restartLimit ?? 3;
  const windowMs = options.restartWindowMs ?? 3_600_000;
  const ttl = options.leaseTtlMs ?? 10_000;
  const stop = new AbortController();
  let busy = false;
  const leadership = createFailoverLeadership({ store, logger, runnerId, ttl, stop: stop.signal });
  const decisions = createFailoverDecisions(options);
  const { decide } = decisions;

  // Nodes that failed to restart a VM, whether a failover's target or its own node back:
  // not asked again for that VM for a while (failed-targets.ts).
  const failedTargets = createFailedTargets(nodeKey);
  const removalTimeoutMs = options.removalTimeoutMs ?? REMOVAL_TIMEOUT_MS;
  // Acts kept as intents until the trail took them: with a trail only (its tellers).
  const intents =
    options.runners === undefined
      ? undefined
      : createAuditIntents({
          store,
          clock,
          logger,
          runners: options.runners,
          tellStaleCopy: options.onStaleCopy,
          tellHaStart: options.onRestartUntold,
          // The longest act (a removal, or a start and its mark put back), and a lease.
          actBoundMs: Math.max(removalTimeoutMs, START_BOUND_MS) + ttl,
          tellTimeoutMs: options.auditTellTimeoutMs,
        });

  const ha = createHaRestore({
    store,
    failedTargets,
    executors: options.executors,
    elected: leadership.elected,
    leading: leadership.take,
    restartLimit: limit,
    restartWindowMs: windowMs,
    logger,
    decide,
    clock,
    intents,
  });

  const staleCopies = createStaleCopyRemover({
    store,
    clock,
    conflicts: (s) => options.inventory.conflicts(s),
    executors: options.executors,
    elected: leadership.elected,
    holds: reportedHolding(options.inventory),
    ready: reportedReady(options.inventory),
    // A removal can outlast the lease: keep it while one is under way. Only the lease
    // the election was won on, and never taking the election (a failure is the next
    // lead()'s to find): a renewal that took it mid-pass would move `elected` under the pass.
    renew: leadership.renew,
    renewEveryMs: Math.max(100, Math.floor(ttl / 3)),
    decide: decisions.staleCopy,
    intents,
    removalTimeoutMs,
  });

  const placements = createPlacementReconciler({
    store,
    inventory: options.inventory,
    elected: leadership.elected,
    decide: decisions.adopted,
  });

  const pass = createFailoverPass({
    store,
    clock,
    logger,
    failover: options,
    leadership,
    decisions,
    ha,
    staleCopies,
    placements,
    limit,
    windowMs,
    maxParallel: options.maxParallel ?? 4,
    failedTargets,
    markRestarts: options.markRestarts,
  });

  /** The pass under way, if any: close() lets it wind down before resigning. */
  let passing: Promise<void> | undefined;

  async function tick() {
    if (busy || stop.signal.aborted) return;
    busy = true;
    try {
      if (await leadership.take()) {
        passing = pass(stop.signal);
        await passing;
      }
    } catch (err) {
      if (!stop.signal.aborted) logger.warn({ err }, "failover controller pass failed");
    } finally {
      busy = false;
    }
  }

  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  return {
    isLeader: leadership.isLeader,
    tick,
    async close() {
      clearInterval(timer);
      stop.abort();
      // What the pass has under way ends first, while this process still leads: a start cut
      // short puts its VM's mark back (ha-restore.ts), a write conditional on the election.
      // Resigned at once, those writes failed, and no leader started the VMs again.
      const ending = passing?.catch(() => undefined);
      if (ending !== undefined)
        await Promise.race([ending, new Promise((r) => setTimeout(r, CLOSE_WAIT_MS).unref())]);
      ha.close();
      await leadership.resign();
    },
  };
}
