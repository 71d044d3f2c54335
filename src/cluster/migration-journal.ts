import { randomBytes } from "node:crypto";
import type { Clock } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Compare, TxnOp } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { createMigrationEvents } from "./migration-events.js";
import { type MigrationJob, type MigrationJobKind, NO_PROGRESS } from "./migration-job.js";
import type { MigrationRecords } from "./migration-records.js";
import { jobOf, recordOf } from "./migration-wire.js";

/** Options of {@link createMigrationJournal}. */
export interface MigrationJournalOptions {
  readonly records: MigrationRecords;
  /** This process's runner id: the owner named in the records it writes. */
  readonly runnerId: string;
  readonly clock: Clock;
  /** Progress is written to the store at most this often (default 1000 ms). */
  readonly progressSaveMs?: number;
  /** Where each migration's start, phases and end are told (default: nowhere). */
  readonly events?: EventSink;
}

/** What a new job is made of. */
export interface NewJob {
  readonly vm: VmInfo;
  readonly source: string;
  readonly target: string;
  readonly live: boolean;
  readonly allowDowntime: boolean;
  readonly kind: MigrationJobKind;
  readonly requestedBy: string;
}

/**
 * The migrations (and failovers) this process writes: new ids and jobs,
 * their records in the store (begin, claim, publish), which ones this
 * process owns (reconciliation leaves those alone), and who is told of each
 * change (watchers of this process, the cluster's events). The runner,
 * settling and failover all go through it; none of them touches records.
 */
export interface MigrationJournal {
  readonly runnerId: string;
  /** A new PENDING job owned by this process (nothing written yet). */
  newJob(fields: NewJob): MigrationJob;
  /**
   * Writes a new job with its VM's lock and its reservation (see
   * `MigrationRecords.begin`), owning it from just before the write; false
   * (and not owned) when the lock, the reservations or `extraCompares` changed.
   */
  begin(
    job: MigrationJob,
    reservedRevision: number,
    signal?: AbortSignal,
    extraCompares?: readonly Compare[],
    extraOps?: readonly TxnOp[],
  ): Promise<boolean>;
  /**
   * Stores a changed job and tells its watchers, in the order published; a
   * progress write is skipped if the last one was under `progressSaveMs`
   * ago unless `force`; `final` finishes it (lock and reservation
   * released). Resolves with the job as written (its times stamped).
   */
  publish(job: MigrationJob, options?: { final?: boolean; force?: boolean }): Promise<MigrationJob>;
  /** Takes over a job whose runner is gone, if unchanged since `modRevision`: the job now this process's. */
  claim(
    job: MigrationJob,
    modRevision: number,
    signal?: AbortSignal,
  ): Promise<MigrationJob | undefined>;
  /**
   * The compare that holds while the job's stored record is still this
   * process's (see `MigrationRecords.ownership`), read once this process's
   * writes of it published so far have landed; the caller publishes nothing
   * more of the job until it has used it.
   */
  ownership(job: MigrationJob, signal?: AbortSignal): Promise<Compare | undefined>;
  /** Marks a job as this process's until `disown`: reconciliation leaves it alone. */
  own(id: string): void;
  disown(id: string): void;
  owns(id: string): boolean;
  get(id: string, signal?: AbortSignal): Promise<MigrationJob | undefined>;
  /** Every job with its record's revision, oldest first. */
  list(signal?: AbortSignal): Promise<{ job: MigrationJob; modRevision: number }[]>;
  /** Hears each job this process publishes for `id`; returns how to stop. */
  subscribe(id: string, listener: (job: MigrationJob) => void): () => void;
}

/** Creates the {@link MigrationJournal}. */
export function createMigrationJournal(options: MigrationJournalOptions): MigrationJournal {
  const { records, runnerId, clock } = options;
  const saveEvery = options.progressSaveMs ?? 1000;
  const owned = new Set<string>();
  const listeners = new Map<string, Set<(job: MigrationJob) => void>>();
  const lastSaved = new Map<string, number>();
  /** A progress write skipped, saved once its interval has passed unless a later write came first. */
  const trailing = new Map<string, { job: MigrationJob; timer: NodeJS.Timeout }>();
  /** Writes of one migration, in order: a slow progress save never lands after the final one. */
  const chains = new Map<string, Promise<void>>();
  const told = createMigrationEvents(options.events);
  let counter = 0;

  const newId = () =>
    `m-${clock.now().toString(36).padStart(9, "0")}-${(counter++ % 1296).toString(36).padStart(2, "0")}${randomBytes(3).toString("hex")}`;

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
    runnerId,
    newJob(f) {
      const now = clock.now();
      return {
        id: newId(),
        vmId: f.vm.id,
        tenant: f.vm.tenant,
        source: f.source,
        target: f.target,
        kind: f.kind,
        live: f.live,
        allowDowntime: f.allowDowntime,
        requestedBy: f.requestedBy,
        runner: runnerId,
        reserved: { vcpus: f.vm.vcpus, memoryBytes: f.vm.memoryBytes },
        restartAfter: false,
        status: { state: "pending", phase: "preparing" },
        progress: NO_PROGRESS,
        message: "",
        createdMs: now,
        updatedMs: now,
        finishedMs: 0,
      };
    },
    async begin(job, reservedRevision, signal, extraCompares, extraOps) {
      owned.add(job.id);
      let begun = false;
      try {
        begun = await records.begin(
          recordOf(job),
          reservedRevision,
          signal,
          extraCompares,
          extraOps,
        );
      } finally {
        if (!begun) owned.delete(job.id);
      }
      return begun;
    },
    publish,
    async ownership(job, signal) {
      // After this process's own writes of the job still on their way: they change the record.
      await chains.get(job.id)?.catch(() => undefined);
      return records.ownership(recordOf(job), signal);
    },
    async claim(job, modRevision, signal) {
      const claimed = { ...job, runner: runnerId };
      return (await records.claim(recordOf(claimed), modRevision, signal)) ? claimed : undefined;
    },
    own: (id) => void owned.add(id),
    disown: (id) => void owned.delete(id),
    owns: (id) => owned.has(id),
    async get(id, signal) {
      const rec = await records.get(id, signal);
      return rec === undefined ? undefined : jobOf(rec);
    },
    async list(signal) {
      const out: { job: MigrationJob; modRevision: number }[] = [];
      for (const { record, modRevision } of await records.list(signal)) {
        const job = jobOf(record);
        if (job !== undefined) out.push({ job, modRevision });
      }
      return out;
    },
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
