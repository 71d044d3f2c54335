/**
 * Telling a migration settled by reconciliation to the audit trail, at
 * least once. The settle publishes the final record marked
 * `settle_untold` (in the transaction that settles it); the outcome is told
 * (`onSettled`, which resolves once the trail took the record) and only
 * then is the mark cleared. A process that dies between the two, or whose
 * trail refused the record, leaves the mark: every reconcile pass looks at
 * the marked records, and a record found unchanged at two passes in a row
 * is claimed with a compare-and-swap (so one process of several tells it)
 * and told. Pruning keeps a marked record. A record told and not cleared
 * (its process died right after the trail took it) is told twice: a
 * duplicate, never a loss.
 */
import { create } from "@bufbuild/protobuf";
import type { Logger } from "../core/index.js";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { getMessage, type KvStore, updateMessage } from "../store/index.js";
import { jobActive, type MigrationJob } from "./migration-job.js";
import { enc, MIGRATION_RECORDS } from "./migration-record-keys.js";
import { jobOf } from "./migration-wire.js";

/** What {@link createMigrationSettleTell} works with. */
export interface MigrationSettleTellOptions {
  readonly store: KvStore;
  readonly logger: Logger;
  /** Resolves once the settle is in the audit trail; a rejection leaves it to be told again. */
  readonly onSettled: ((job: MigrationJob) => Promise<void> | void) | undefined;
}

/** The two ways a settle is told: by its settler, and by a pass finding one left untold. */
export interface MigrationSettleTell {
  /** The settled job as it is to be published: marked untold when there is a trail to tell. */
  mark(job: MigrationJob): MigrationJob;
  /** Tells a published settle and clears its mark. Never rejects: a failure leaves it to a pass. */
  tell(job: MigrationJob, signal?: AbortSignal): Promise<void>;
  /** Tells the settles of `all` (a pass's list) found marked, unchanged since the pass before. */
  tellLeftUntold(
    all: readonly { job: MigrationJob; modRevision: number }[],
    signal?: AbortSignal,
  ): Promise<void>;
}

/** Creates the {@link MigrationSettleTell} of a settler (migration-settle.ts). */
export function createMigrationSettleTell(
  options: MigrationSettleTellOptions,
): MigrationSettleTell {
  const { store, logger, onSettled } = options;
  /** Marked records as the last pass saw them (id to revision). */
  let seen = new Map<string, number>();
  /** Settles this process is telling now: not claimed from itself by its own pass. */
  const telling = new Set<string>();

  async function tell(job: MigrationJob, signal?: AbortSignal): Promise<void> {
    if (onSettled === undefined) return;
    telling.add(job.id);
    try {
      await onSettled(job);
    } catch (err) {
      logger.error(
        { err, migration: job.id },
        "settled migration not audited; told again by a pass",
      );
      return;
    } finally {
      telling.delete(job.id);
    }
    await updateMessage(
      store,
      MigrationRecordSchema,
      MIGRATION_RECORDS + job.id,
      (cur) =>
        cur?.settleUntold === true
          ? create(MigrationRecordSchema, { ...cur, settleUntold: false })
          : undefined,
      { signal },
    ).catch((err: unknown) => {
      // Told, but still marked: a pass tells it again (a duplicate, never a loss).
      if (signal?.aborted !== true)
        logger.warn({ err, migration: job.id }, "settled migration told, not marked");
    });
  }

  /** Claims `id` if its record is still as seen at `revision`, then tells it. */
  async function claimAndTell(id: string, revision: number, signal?: AbortSignal) {
    const key = MIGRATION_RECORDS + id;
    const got = await getMessage(store, MigrationRecordSchema, key, { signal });
    if (got === undefined || got.modRevision !== revision || !got.message.settleUntold) return;
    const txn = await store.txn(
      {
        compares: [{ key, modRevision: revision }],
        success: [{ type: "put", key, value: enc(got.message) }],
      },
      { signal },
    );
    const job = jobOf(got.message);
    if (!txn.succeeded || job === undefined) return; // another process claimed it, or cleared it
    logger.warn({ migration: id }, "settled migration left untold by its settler; telling it now");
    await tell(job, signal);
  }

  return {
    mark: (job) => (onSettled === undefined ? job : { ...job, settleUntold: true }),
    tell,
    async tellLeftUntold(all, signal) {
      if (onSettled === undefined) return;
      const before = seen;
      seen = new Map();
      for (const { job, modRevision } of all) {
        if (job.settleUntold !== true || jobActive(job) || telling.has(job.id)) continue;
        seen.set(job.id, modRevision);
        if (before.get(job.id) !== modRevision) continue; // new, or changed since: told now, maybe
        try {
          await claimAndTell(job.id, modRevision, signal);
        } catch (err) {
          logger.warn({ err, migration: job.id }, "telling an untold settle failed; next pass");
        }
      }
    },
  };
}
