import type { Clock, Logger } from "../core/index.js";
import type { ReplicationJobs } from "./replication-jobs.js";
import type { ReplicationRunner } from "./replication-runner.js";

/** Options of {@link createReplicationScheduler}. */
export interface ReplicationSchedulerOptions {
  readonly jobs: ReplicationJobs;
  readonly runner: ReplicationRunner;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How often due jobs are looked for (default 5 s). */
  readonly tickMs?: number;
  /** Runs this daemon performs at once (default 2); due jobs beyond it wait for a later tick. */
  readonly maxConcurrentRuns?: number;
}

/**
 * Runs replication jobs when they are due: on their interval after a
 * success, after a growing backoff after a failure (both recorded in the
 * job's status by the runner). Any number of daemons may run a scheduler on
 * one store; the runner's lock in the store lets only one of them run a job.
 */
export interface ReplicationScheduler {
  /** Starts the due jobs not running anywhere (up to the limit); resolves when those runs end. */
  tick(): Promise<void>;
  /** Ticks every `tickMs` until stopped. */
  start(): void;
  /** Stops ticking; resolves when runs started here have ended (the runner's closing signal aborts them). */
  stop(): Promise<void>;
}

/** Creates a {@link ReplicationScheduler}. */
export function createReplicationScheduler(
  options: ReplicationSchedulerOptions,
): ReplicationScheduler {
  const { jobs, runner, clock } = options;
  const log = options.logger.child({ component: "replication-scheduler" });
  const tickMs = options.tickMs ?? 5000;
  const maxRuns = options.maxConcurrentRuns ?? 2;
  const running = new Map<string, Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let listing = false;
  let stopped = false;

  /** Starts due runs; returns them without waiting. */
  async function launchDue(): Promise<Promise<void>[]> {
    if (listing || stopped) return [];
    listing = true;
    try {
      const now = clock.now();
      const due = (await jobs.list())
        .filter(
          (j) =>
            j.lock === undefined &&
            Number(j.status.nextRunAtMs) <= now &&
            !running.has(j.job.jobId),
        )
        .sort((a, b) => Number(a.status.nextRunAtMs - b.status.nextRunAtMs));
      const started: Promise<void>[] = [];
      for (const j of due) {
        if (running.size >= maxRuns || stopped) break;
        const jobId = j.job.jobId;
        const run = runner
          .run(jobId, { onlyIfDue: true })
          .then(
            () => undefined,
            (err: unknown) =>
              log.error({ err, jobId }, "scheduled replication run could not start"),
          )
          .finally(() => running.delete(jobId));
        running.set(jobId, run);
        started.push(run);
      }
      return started;
    } finally {
      listing = false;
    }
  }

  return {
    async tick() {
      await Promise.all(await launchDue());
    },
    start() {
      if (timer !== undefined || stopped) return;
      timer = setInterval(() => {
        launchDue().catch((err: unknown) => log.warn({ err }, "replication scheduler tick failed"));
      }, tickMs);
      timer.unref();
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      await Promise.all(running.values());
    },
  };
}
