/**
 * Telling the end of a migration to the audit trail at least once, when
 * the control plane ended it on its own: a settle by reconciliation (its
 * runner had died), or a restart by the failover controller. The record is
 * marked `untold` in the write that makes it so (the settle's final write;
 * a controller restart's begin); the end is told (resolving once the trail
 * took the record) and only then is the mark cleared.
 *
 * A mark left (a trail that refused or hung, a process that died between
 * the two) is told by a reconcile pass once the record is unchanged at two
 * passes in a row: by the process named its runner, if that one is alive
 * (telling it again, backing off while its trail refuses); else by a process
 * that claims it with a compare-and-swap naming itself the runner, so one
 * process of several tells it and a slow trail is not told once per
 * daemon. A tell not answered within {@link TELL_TIMEOUT_MS} counts as
 * refused; after {@link HAND_OFF_AFTER} failures (a trail stuck on its disk)
 * the runner hands the record off (no runner), and another daemon's pass
 * claims it. A process never takes, nor clears, a record whose kind it has
 * no trail for (a daemon without audit). A tell is never awaited by a pass:
 * a trail that hangs must not stop settling. A controller restart that failed was told by the controller
 * as it failed: its mark is only cleared. Pruning keeps a marked record. A
 * record told and not cleared (its process died right after the trail took
 * it, or was paused past its lease while telling) is told twice: a
 * duplicate, never a loss.
 */
import { type Logger, within } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { jobActive, type MigrationJob } from "./migration-job.js";
import { clearUntold, NO_RUNNER, rewriteUntoldRunner } from "./migration-untold-records.js";
import { askOnce, type RunnerRegistry } from "./runner-registry.js";

/** The most passes a tell refused again and again waits before it is tried again. */
const MAX_BACKOFF_PASSES = 64;
/** A tell not answered by then counts as refused (a trail whose disk stalled). */
export const TELL_TIMEOUT_MS = 60_000;
/** Failures of its own tells after which a runner hands the record to the other daemons. */
const HAND_OFF_AFTER = 3;

/** What {@link createMigrationSettleTell} works with. */
export interface MigrationSettleTellOptions {
  readonly store: KvStore;
  readonly logger: Logger;
  /** Resolves once a settle is in the audit trail; a rejection leaves it to be told again. */
  readonly onSettled: ((job: MigrationJob) => Promise<void> | void) | undefined;
  /** As `onSettled`, for a failover controller's restart that succeeded. */
  readonly onRestarted: ((job: MigrationJob) => Promise<void> | void) | undefined;
  /** This process's runner id, and whether another's process is alive (runner-registry.ts). */
  readonly runners: Pick<RunnerRegistry, "id" | "isAlive">;
  /** A tell not answered within this counts as refused (default {@link TELL_TIMEOUT_MS}). */
  readonly tellTimeoutMs?: number;
}

/** The ways an end is told: by the process that ended it, and by a pass finding one left untold. */
export interface MigrationSettleTell {
  /** The settled job as it is to be published: marked untold when there is a trail to tell. */
  mark(job: MigrationJob): MigrationJob;
  /** Tells a published settle and clears its mark. Never rejects: a failure leaves it to a pass. */
  tell(job: MigrationJob): Promise<void>;
  /**
   * Clears the mark of migration `id` once `telling` (its end told by its
   * caller) resolved; a pass of this process leaves it meanwhile. Never
   * rejects: a rejected `telling` leaves it to a pass.
   */
  told(id: string, telling: Promise<void>): Promise<void>;
  /** Tells the ends of `all` (a pass's list) found marked, unchanged since the pass before. */
  tellLeftUntold(
    all: readonly { job: MigrationJob; modRevision: number }[],
    signal?: AbortSignal,
  ): Promise<void>;
}

/** Creates the {@link MigrationSettleTell} of a settler (migration-settle.ts). */
export function createMigrationSettleTell(
  options: MigrationSettleTellOptions,
): MigrationSettleTell {
  const { store, logger, runners } = options;
  const tellTimeoutMs = options.tellTimeoutMs ?? TELL_TIMEOUT_MS;
  /** Marked records as the last pass saw them (id to revision). */
  let seen = new Map<string, number>();
  /** Ends this process is telling now: not claimed from itself by its own pass. */
  const telling = new Set<string>();
  /** Ends whose tell failed here: the passes each still waits, doubling per failure. */
  const backoff = new Map<string, { failures: number; wait: number }>();

  async function told(id: string, tellingIt: Promise<void>): Promise<void> {
    telling.add(id);
    try {
      await within(
        tellingIt,
        tellTimeoutMs,
        `the audit trail did not take it within ${Math.round(tellTimeoutMs / 1000)} s`,
      );
    } catch (err) {
      const failures = (backoff.get(id)?.failures ?? 0) + 1;
      backoff.set(id, { failures, wait: Math.min(2 ** failures, MAX_BACKOFF_PASSES) });
      logger.error(
        { err, migration: id, failures },
        "migration's end not audited; told again by a later pass",
      );
      return;
    } finally {
      telling.delete(id);
    }
    backoff.delete(id);
    await clearUntold(store, id).catch((err: unknown) => {
      // Told, but still marked: a pass tells it again (a duplicate, never a loss).
      logger.warn({ err, migration: id }, "migration's end told, not marked");
    });
  }

  /**
   * Whether this process has a trail for `job`'s end: also for a failed
   * restart (nothing to tell, only to clear), since a daemon without a trail
   * must never clear a mark (it may be one a settle made).
   */
  function canTell(job: MigrationJob): boolean {
    return (job.untold === "settled" ? options.onSettled : options.onRestarted) !== undefined;
  }

  /** The end of `job` as its mark says, told (a failed restart: nothing left to tell). */
  function tellEnd(job: MigrationJob): Promise<void> {
    const tellIt = job.untold === "settled" ? options.onSettled : options.onRestarted;
    const restartFailed = job.untold === "failover" && job.status.state !== "succeeded";
    if (tellIt === undefined || restartFailed) return Promise.resolve();
    return (async () => tellIt(job))();
  }

  /**
   * Tells `job`'s end left untold (its record unchanged since the pass
   * before, at `revision`): again if this process is its runner (handed
   * off after {@link HAND_OFF_AFTER} failures: its trail may be stuck),
   * else once claimed from a runner that is gone. Not awaited by the pass.
   */
  async function tellLeft(
    job: MigrationJob,
    revision: number,
    alive: (runner: string) => Promise<boolean>,
    signal?: AbortSignal,
  ) {
    if (job.runner === runners.id) {
      // One it cannot tell (no trail here for its kind) is handed off at once.
      if (canTell(job) && (backoff.get(job.id)?.failures ?? 0) < HAND_OFF_AFTER) {
        void told(job.id, tellEnd(job));
        return;
      }
      if (await rewriteUntoldRunner(store, job.id, revision, NO_RUNNER, signal)) {
        logger.warn({ migration: job.id }, "migration's end left to another daemon to tell");
        // Not taken back at once (its trail is stuck): the other daemons' passes first.
        const failures = backoff.get(job.id)?.failures ?? HAND_OFF_AFTER;
        backoff.set(job.id, { failures, wait: MAX_BACKOFF_PASSES });
      }
      return;
    }
    // Its runner tells it (again, if its trail refused it), for as long as it lives. Nor is
    // one taken that this process cannot tell (no trail): it would clear the mark untold.
    if (job.runner !== NO_RUNNER && (await alive(job.runner))) return;
    if (!canTell(job)) return;
    if (!(await rewriteUntoldRunner(store, job.id, revision, runners.id, signal))) return;
    logger.warn(
      { migration: job.id, untold: job.untold, runner: job.runner },
      "migration's end left untold by another process; telling it now",
    );
    void told(job.id, tellEnd(job));
  }

  return {
    // A restart's record is marked settled even here without a trail: a daemon with one
    // tells it as such (a restart that began and rolled back was otherwise in no trail).
    mark: (job) =>
      options.onSettled === undefined && job.untold === undefined
        ? job
        : { ...job, untold: "settled" },
    // Not one this process cannot tell (a restart's mark, settled by a daemon without a
    // trail): clearing it would leave it untold for good.
    tell: (job) =>
      job.untold !== undefined && canTell(job) ? told(job.id, tellEnd(job)) : Promise.resolve(),
    told,
    async tellLeftUntold(all, signal) {
      const before = seen;
      seen = new Map();
      const marked = new Set<string>();
      // Each runner asked once a pass, however many of its records are marked.
      const alive = askOnce(runners, signal);
      for (const { job, modRevision } of all) {
        if (job.untold === undefined || jobActive(job)) continue;
        marked.add(job.id);
        if (telling.has(job.id)) continue;
        seen.set(job.id, modRevision);
        if (before.get(job.id) !== modRevision) continue; // new, or changed since: told now, maybe
        const waiting = backoff.get(job.id);
        if (waiting !== undefined && waiting.wait-- > 0) continue;
        try {
          await tellLeft(job, modRevision, alive, signal);
        } catch (err) {
          logger.warn({ err, migration: job.id }, "telling an untold end failed; next pass");
        }
      }
      for (const id of backoff.keys()) if (!marked.has(id)) backoff.delete(id);
    },
  };
}
