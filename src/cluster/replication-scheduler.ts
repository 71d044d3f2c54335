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
  /** Runs the due jobs not running anywhere, at most `maxConcurrentRuns` at once; resolves when done. */
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
  /** Jobs running here, due jobs still to try, and the workers trying them. */
  const running = new Set<string>();
  let queue: string[] = [];
  const workers = new Set<Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  /** Takes due jobs off the queue one at a time; a job skipped (running elsewhere, no longer due) costs one read. */
  async function work(): Promise<void> {
    for (let jobId = queue.shift(); jobId !== undefined && !stopped; jobId = queue.shift()) {
      if (running.has(jobId)) continue;
      running.add(jobId);
      try {
        await runner.run(jobId, { onlyIfDue: true });
      } catch (err) {
        log.error({ err, jobId }, "scheduled replication run could not start");
      } finally {
        running.delete(jobId);
      }
    }
  }

  /** Lists the due jobs and starts workers for them, up to the limit; resolves when those workers finish. */
  async function launch(): Promise<void> {
    if (stopped) return;
    const now = clock.now();
    queue = (await jobs.list())
      .filter(
        (j) =>
          j.lock === undefined && Number(j.status.nextRunAtMs) <= now && !running.has(j.job.jobId),
      )
      .sort((a, b) => Number(a.status.nextRunAtMs - b.status.nextRunAtMs))
      .map((j) => j.job.jobId);
    const started: Promise<void>[] = [];
    while (!stopped && workers.size < maxRuns && started.length < queue.length) {
      const w = work().finally(() => workers.delete(w));
      workers.add(w);
      started.push(w);
    }
    await Promise.all(started);
  }

  return {
    tick: launch,
    start() {
      if (timer !== undefined || stopped) return;
      timer = setInterval(() => {
        launch().catch((err: unknown) => log.warn({ err }, "replication scheduler tick failed"));
      }, tickMs);
      timer.unref();
    },
    async stop() {
      stopped = true;
      queue = [];
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      await Promise.all(workers);
    },
  };
}
