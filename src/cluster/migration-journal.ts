import { randomBytes } from "node:crypto";
import type { Clock } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Compare, TxnOp } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { type MigrationJob, type MigrationJobKind, NO_PROGRESS } from "./migration-job.js";
import { createMigrationPublisher } from "./migration-publisher.js";
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
  const publisher = createMigrationPublisher({
    records,
    clock,
    saveEvery,
    events: options.events,
  });
  // Orders the ids made in one millisecond. It restarts each millisecond: a
  // count kept across them would tell a tenant, from two of its own ids, how
  // many migrations other tenants started in between.
  let counter = 0;
  let counted = 0;

  const newId = () => {
    const now = clock.now();
    if (now !== counted) [counter, counted] = [0, now];
    return `m-${now.toString(36).padStart(9, "0")}-${(counter++ % 1296).toString(36).padStart(2, "0")}${randomBytes(3).toString("hex")}`;
  };

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
    publish: publisher.publish,
    async ownership(job, signal) {
      // After this process's own writes of the job still on their way: they change the record.
      await publisher.pending(job.id)?.catch(() => undefined);
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
    subscribe: publisher.subscribe,
  };
}
