/**
 * The end of a migration in the store: its final record written, its VM's
 * lock and its target's reservation released and, when it moved the VM,
 * the VM's placement committed, all in one transaction and only while this
 * process's runner still owns the record; old finished records pruned now
 * and then. Part of `createMigrationRecords` (migration-records.ts).
 */
import { create } from "@bufbuild/protobuf";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  ReservationsRecordSchema,
  Untold,
} from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationPhase, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { getMessage, type KvStore, LOST, retryWhileLost } from "../store/index.js";
import {
  enc,
  idOf,
  isActive,
  MIGRATION_LOCKS,
  MIGRATION_RECORDS,
  notOwned,
  targetOf,
  vmOf,
} from "./migration-record-keys.js";
import type { MigrationRecords } from "./migration-records.js";
import {
  type MigrationReservations,
  RESERVATIONS,
  reservationOps,
} from "./migration-reservations.js";
import { placementChange, readPlacement } from "./vm-placement.js";

const MAX_ATTEMPTS = 8;
/** Finished migrations kept for ListMigrations; older ones are deleted. */
const KEEP_FINISHED = 2000;
/** Old records are pruned once per this many finishes, not on every one. */
const PRUNE_EVERY = 50;

/** What {@link createMigrationFinish} works with. */
export interface MigrationFinishDeps {
  readonly store: KvStore;
  /** Every record with its revision, oldest first (`MigrationRecords.list`). */
  readonly list: MigrationRecords["list"];
  readonly reservations: MigrationReservations;
}

/** Creates the store-backed {@link MigrationRecords.finish}. */
export function createMigrationFinish(deps: MigrationFinishDeps): Pick<MigrationRecords, "finish"> {
  const { store, list, reservations } = deps;
  let finished = 0;

  async function prune(signal?: AbortSignal) {
    const all = await list(signal);
    // Not one whose settle is not in the audit trail yet: telling it needs the record
    // (migration-settle-tell.ts).
    const finished = all.filter(
      (r) =>
        !isActive(r.record.migration?.state ?? MigrationState.UNSPECIFIED) &&
        r.record.untold === Untold.UNSPECIFIED,
    );
    for (const old of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED)))
      await store.delete(MIGRATION_RECORDS + idOf(old.record), { signal });
  }

  /**
   * The stored record's revision, after checking `record`'s runner still
   * owns it. A record that is gone was settled and pruned by another
   * process: written back, it would undo that settling.
   */
  async function ownedBy(record: MigrationRecord, signal?: AbortSignal): Promise<number> {
    const got = await getMessage(store, MigrationRecordSchema, MIGRATION_RECORDS + idOf(record), {
      signal,
    });
    if (got === undefined || got.message.runner !== record.runner) throw notOwned();
    return got.modRevision;
  }

  return {
    async finish(record, signal) {
      const target = targetOf(record);
      return retryWhileLost(MAX_ATTEMPTS, async () => {
        const current = await ownedBy(record, signal);
        const { rec, rev } = await reservations.read(target, signal);
        const lock = await store.get(MIGRATION_LOCKS + vmOf(record), { signal });
        const ownsLock =
          lock !== undefined && new TextDecoder().decode(lock.value) === idOf(record);
        const next = create(ReservationsRecordSchema, {
          items: rec.items.filter((i) => i.migrationId !== idOf(record)),
        });
        const moved = movedBy(record)
          ? placementChange(vmOf(record), await readPlacement(store, vmOf(record), signal), target)
          : undefined;
        const txn = await store.txn(
          {
            compares: [
              ...(moved === undefined ? [] : [moved.compare]),
              { key: MIGRATION_RECORDS + idOf(record), modRevision: current },
              { key: RESERVATIONS + target, modRevision: rev },
              ...(lock === undefined
                ? []
                : [{ key: MIGRATION_LOCKS + vmOf(record), modRevision: lock.modRevision }]),
            ],
            success: [
              { type: "put", key: MIGRATION_RECORDS + idOf(record), value: enc(record) },
              ...(ownsLock
                ? [{ type: "delete" as const, key: MIGRATION_LOCKS + vmOf(record) }]
                : []),
              ...(rev === 0 && next.items.length === 0 ? [] : [reservationOps(target, next)]),
              ...(moved === undefined ? [] : [moved.op]),
            ],
          },
          { signal },
        );
        if (txn.succeeded) {
          // Housekeeping after the commit: a failed prune must not make a finish that
          // happened look failed (the next one prunes again).
          if (++finished % PRUNE_EVERY === 0) await prune(signal).catch(() => {});
          return;
        }
        return LOST;
      });
    },
  };
}

/** A finished migration (not a failover, placed when it began) that moved its VM to the target. */
function movedBy(record: MigrationRecord): boolean {
  const m = record.migration;
  return (
    m !== undefined &&
    m.kind !== MigrationKind.FAILOVER &&
    !isActive(m.state) &&
    m.phase === MigrationPhase.COMPLETED
  );
}
