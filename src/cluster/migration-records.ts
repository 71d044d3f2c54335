/**
 * Migrations in the store: their contract ({@link MigrationRecords}) and
 * `createMigrationRecords`, which composes it from its parts: the keys and
 * record fields (migration-record-keys.ts), the reservations per target
 * node (migration-reservations.ts) and the finish (migration-finish.ts).
 * Begin, save, claim and the reads are here.
 */
import { create } from "@bufbuild/protobuf";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  ReservationsRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Compare,
  decodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
  type TxnOp,
  updateMessage,
} from "../store/index.js";
import type { Reserved } from "./free-capacity.js";
import { createMigrationFinish } from "./migration-finish.js";
import {
  enc,
  idOf,
  MIGRATION_LOCKS,
  MIGRATION_RECORDS,
  notOwned,
  targetOf,
  vmOf,
} from "./migration-record-keys.js";
import {
  createMigrationReservations,
  RESERVATIONS,
  reservationOps,
} from "./migration-reservations.js";

export { isActive, MIGRATION_LOCKS, MIGRATION_RECORDS } from "./migration-record-keys.js";

/**
 * Migrations in the store: the record of each (`migrations/<id>`), one lock
 * per VM (`migration-locks/<vm>`) so a VM has one operation at a time, and
 * the capacity each in-flight migration holds on its target
 * (`reservations/<node>`). Starting and finishing change all three in one
 * transaction. A VM's creation holds capacity in the same reservations
 * (holder `create:<operation id>`, see {@link MigrationRecords.hold}).
 */
export interface MigrationRecords {
  /**
   * Stores a new migration, takes its VM's lock and reserves its capacity,
   * atomically. False when the lock is taken or the target's reservations
   * changed since `reservedRevision` (re-plan and try again), or one of
   * `extraCompares` failed; `extraOps` are written in the same txn.
   */
  begin(
    record: MigrationRecord,
    reservedRevision: number,
    signal?: AbortSignal,
    extraCompares?: readonly Compare[],
    extraOps?: readonly TxnOp[],
  ): Promise<boolean>;
  /**
   * Writes a running migration's new state. Only its runner may: when the
   * stored record names another runner (this process lost its lease and
   * another settled it), or is gone (settled and pruned), it throws
   * CONFLICT and writes nothing.
   */
  save(record: MigrationRecord, signal?: AbortSignal): Promise<void>;
  /**
   * Writes a finished migration and releases its lock and reservation;
   * CONFLICT as for `save`. A migration that moved the VM (phase COMPLETED)
   * commits its placement in the same txn: the VM is on the target and its
   * generation is bumped (a failover bumped it when it began).
   */
  finish(record: MigrationRecord, signal?: AbortSignal): Promise<void>;
  /**
   * Takes over a record whose runner is gone: succeeds only if nobody
   * changed it since it was read at `modRevision`.
   */
  claim(record: MigrationRecord, modRevision: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * The compare that holds while `record`'s runner still owns its stored
   * record as read now; undefined when another process has taken it over
   * (or it is gone). For writes a runner makes outside the record (the VM's
   * placement), which must not land once another process settled it.
   */
  ownership(record: MigrationRecord, signal?: AbortSignal): Promise<Compare | undefined>;
  get(id: string, signal?: AbortSignal): Promise<MigrationRecord | undefined>;
  /** Every record with its revision, oldest first. */
  list(signal?: AbortSignal): Promise<{ record: MigrationRecord; modRevision: number }[]>;
  /** Whether a migration or failover of the VM is in flight (holds its lock). */
  locked(vmId: string, signal?: AbortSignal): Promise<boolean>;
  /** To compare in a transaction: no migration or failover of the VM holds its lock. */
  unlocked(vmId: string): Compare;
  /** Capacity reserved per node, and the revision of one node's reservations (0: none). */
  reserved(signal?: AbortSignal): Promise<{
    byNode: Map<string, Reserved>;
    revisions: Map<string, number>;
    /** The holders of each node's reservations (migration ids, `create:<operation id>`). */
    holders: Map<string, Set<string>>;
  }>;
  /**
   * The compare and write that add a holder's reservation to a node's, for
   * the caller's own transaction (a VM's creation holds its capacity this
   * way until its operation settles); undefined when the node's reservations
   * are no longer at `revision` (place again).
   */
  hold(
    node: string,
    holder: { id: string; vcpus: number; memoryBytes: bigint },
    revision: number,
    signal?: AbortSignal,
  ): Promise<{ compare: Compare; op: TxnOp } | undefined>;
  /** The compare and write that drop a holder's reservation; undefined when it holds none. */
  release(
    node: string,
    holderId: string,
    signal?: AbortSignal,
  ): Promise<{ compare: Compare; op: TxnOp } | undefined>;
}

/** Creates the store-backed {@link MigrationRecords}. */
export function createMigrationRecords(store: KvStore): MigrationRecords {
  const reservations = createMigrationReservations(store);

  async function list(signal?: AbortSignal) {
    const out: { record: MigrationRecord; modRevision: number }[] = [];
    for await (const kv of rangeAll(store, MIGRATION_RECORDS, { signal }))
      out.push({ record: decodeMessage(MigrationRecordSchema, kv), modRevision: kv.modRevision });
    return out;
  }

  return {
    async begin(record, reservedRevision, signal, extraCompares = [], extraOps = []) {
      const target = targetOf(record);
      const { rec } = await reservations.read(target, signal);
      const next = create(ReservationsRecordSchema, {
        items: [
          ...rec.items,
          {
            migrationId: idOf(record),
            vcpus: record.vcpusReserved,
            memoryBytes: record.memoryReserved,
          },
        ],
      });
      const txn = await store.txn(
        {
          compares: [
            { key: MIGRATION_LOCKS + vmOf(record), modRevision: 0 },
            { key: RESERVATIONS + target, modRevision: reservedRevision },
            ...extraCompares,
          ],
          success: [
            { type: "put", key: MIGRATION_RECORDS + idOf(record), value: enc(record) },
            {
              type: "put",
              key: MIGRATION_LOCKS + vmOf(record),
              value: new TextEncoder().encode(idOf(record)),
            },
            reservationOps(target, next),
            ...extraOps,
          ],
        },
        { signal },
      );
      return txn.succeeded;
    },
    async save(record, signal) {
      await updateMessage(
        store,
        MigrationRecordSchema,
        MIGRATION_RECORDS + idOf(record),
        (current) => {
          if (current === undefined || current.runner !== record.runner) throw notOwned();
          // A cancel asked through another process stays asked (see migration-cancel-requests).
          return current.cancelRequested
            ? create(MigrationRecordSchema, { ...record, cancelRequested: true })
            : record;
        },
        { signal },
      );
    },
    async claim(record, modRevision, signal) {
      const txn = await store.txn(
        {
          compares: [{ key: MIGRATION_RECORDS + idOf(record), modRevision }],
          success: [{ type: "put", key: MIGRATION_RECORDS + idOf(record), value: enc(record) }],
        },
        { signal },
      );
      return txn.succeeded;
    },
    async ownership(record, signal) {
      const key = MIGRATION_RECORDS + idOf(record);
      const got = await getMessage(store, MigrationRecordSchema, key, { signal });
      return got === undefined || got.message.runner !== record.runner
        ? undefined
        : { key, modRevision: got.modRevision };
    },
    async get(id, signal) {
      return (await getMessage(store, MigrationRecordSchema, MIGRATION_RECORDS + id, { signal }))
        ?.message;
    },
    list,
    async locked(vmId, signal) {
      return (await store.get(MIGRATION_LOCKS + vmId, { signal })) !== undefined;
    },
    unlocked: (vmId) => ({ key: MIGRATION_LOCKS + vmId, modRevision: 0 }),
    hold: reservations.hold,
    release: reservations.release,
    reserved: reservations.reserved,
    ...createMigrationFinish({ store, list, reservations }),
  };
}
