/**
 * How the journal publishes a changed migration: each write of one
 * migration chained after the last (a slow progress save never lands after
 * the final one), progress saved at most every `saveEvery` ms with the last
 * one before a pause saved all the same, and each change told to the
 * watchers of this process and to the cluster's events once written. Built
 * once by `createMigrationJournal`.
 */
import type { Clock } from "../core/index.js";
import type { EventSink } from "./event-recorder.js";
import { createMigrationEvents } from "./migration-events.js";
import type { MigrationJob } from "./migration-job.js";
import type { MigrationRecords } from "./migration-records.js";
import { recordOf } from "./migration-wire.js";

/** What {@link createMigrationPublisher} works with (the journal's). */
export interface MigrationPublisherDeps {
  readonly records: MigrationRecords;
  readonly clock: Clock;
  /** Progress is written to the store at most this often (ms). */
  readonly saveEvery: number;
  /** Where each migration's start, phases and end are told (undefined: nowhere). */
  readonly events: EventSink | undefined;
}

/** Publishes jobs in order and tells who listens. */
export interface MigrationPublisher {
  /** As `MigrationJournal.publish`. */
  publish(job: MigrationJob, options?: { final?: boolean; force?: boolean }): Promise<MigrationJob>;
  /** This process's writes of the job `id` still on their way, if any (it may reject). */
  pending(id: string): Promise<void> | undefined;
  /** As `MigrationJournal.subscribe`. */
  subscribe(id: string, listener: (job: MigrationJob) => void): () => void;
}

/** Creates the {@link MigrationPublisher} over `deps`. */
export function createMigrationPublisher(deps: MigrationPublisherDeps): MigrationPublisher {
  const { records, clock, saveEvery } = deps;
  const listeners = new Map<string, Set<(job: MigrationJob) => void>>();
  const lastSaved = new Map<string, number>();
  /** A progress write skipped, saved once its interval has passed unless a later write came first. */
  const trailing = new Map<string, { job: MigrationJob; timer: NodeJS.Timeout }>();
  /** Writes of one migration, in order: a slow progress save never lands after the final one. */
  const chains = new Map<string, Promise<void>>();
  const told = createMigrationEvents(deps.events);

  /**
   * The last progress before a pause (a held or slow transfer) is saved all
   * the same, once its interval has passed: else the record, and every
   * watcher in another process, would show the one before it for the whole
   * pause. A write that goes ahead (or the final one) drops it.
   */
  function trail(job: MigrationJob, skipped: boolean, now: number): void {
    const pending = trailing.get(job.id);
    if (!skipped) {
      if (pending !== undefined) clearTimeout(pending.timer);
      trailing.delete(job.id);
      return;
    }
    if (pending !== undefined) {
      pending.job = job;
      return;
    }
    const wait = Math.max(1, saveEvery - (now - (lastSaved.get(job.id) ?? 0)));
    const timer = setTimeout(() => {
      const latest = trailing.get(job.id);
      trailing.delete(job.id);
      if (latest !== undefined) void publish(latest.job, { force: true }).catch(() => undefined);
    }, wait);
    timer.unref();
    trailing.set(job.id, { job, timer });
  }

  function publish(job: MigrationJob, opts: { final?: boolean; force?: boolean } = {}) {
    const { id } = job;
    const now = clock.now();
    const stamped: MigrationJob = {
      ...job,
      updatedMs: now,
      finishedMs: opts.final ? now : job.finishedMs,
    };
    const record = recordOf(stamped);
    const write = opts.final
      ? () => records.finish(record)
      : opts.force || now - (lastSaved.get(id) ?? 0) >= saveEvery
        ? () => {
            lastSaved.set(id, now);
            return records.save(record);
          }
        : undefined;
    trail(job, write === undefined && !opts.final, now);
    const prev = chains.get(id) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(async () => {
        if (write !== undefined) await write();
        told.changed(stamped);
        for (const l of listeners.get(id) ?? []) l(stamped);
      });
    chains.set(id, next);
    if (opts.final) {
      void next
        .catch(() => undefined)
        .finally(() => {
          if (chains.get(id) === next) chains.delete(id);
          lastSaved.delete(id);
        });
    }
    return next.then(() => stamped);
  }

  return {
    publish,
    pending: (id) => chains.get(id),
    subscribe(id, listener) {
      let set = listeners.get(id);
      if (set === undefined) {
        set = new Set();
        listeners.set(id, set);
      }
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0) listeners.delete(id);
      };
    },
  };
}
