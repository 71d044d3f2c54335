import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  type ReservationsRecord,
  ReservationsRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationPhase, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import {
  type Compare,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
  type TxnOp,
  updateMessage,
} from "../store/index.js";
import type { Reserved } from "./free-capacity.js";
import { placementChange, readPlacement } from "./vm-placement.js";

export const MIGRATION_RECORDS = "migrations/";
/** Key family of the per-VM migration locks: held while a migration or failover of the VM runs. */
export const MIGRATION_LOCKS = "migration-locks/";
const RESERVATIONS = "reservations/";
const MAX_ATTEMPTS = 8;
/** Finished migrations kept for ListMigrations; older ones are deleted. */
const KEEP_FINISHED = 2000;
/** Old records are pruned once per this many finishes, not on every one. */
const PRUNE_EVERY = 50;

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
  let finished = 0;
  const enc = (r: MigrationRecord) => encodeMessage(MigrationRecordSchema, r);
  const idOf = (r: MigrationRecord) => r.migration?.migrationId ?? "";
  const vmOf = (r: MigrationRecord) => r.migration?.vm?.vmId ?? "";
  const targetOf = (r: MigrationRecord) => r.migration?.target?.nodeId?.id ?? "";

  async function readReservations(node: string, signal?: AbortSignal) {
    const got = await getMessage(store, ReservationsRecordSchema, RESERVATIONS + node, { signal });
    return {
      rec: got?.message ?? create(ReservationsRecordSchema, {}),
      rev: got?.modRevision ?? 0,
    };
  }
  function reservationOps(node: string, rec: ReservationsRecord): TxnOp {
    return rec.items.length === 0
      ? { type: "delete", key: RESERVATIONS + node }
      : {
          type: "put",
          key: RESERVATIONS + node,
          value: encodeMessage(ReservationsRecordSchema, rec),
        };
  }

  async function prune(signal?: AbortSignal) {
    const all = await list(signal);
    const finished = all.filter(
      (r) => !isActive(r.record.migration?.state ?? MigrationState.UNSPECIFIED),
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

  async function list(signal?: AbortSignal) {
    const out: { record: MigrationRecord; modRevision: number }[] = [];
    for await (const kv of rangeAll(store, MIGRATION_RECORDS, { signal }))
      out.push({ record: decodeMessage(MigrationRecordSchema, kv), modRevision: kv.modRevision });
    return out;
  }

  return {
    async begin(record, reservedRevision, signal, extraCompares = [], extraOps = []) {
      const target = targetOf(record);
      const { rec } = await readReservations(target, signal);
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
    async finish(record, signal) {
      const target = targetOf(record);
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const current = await ownedBy(record, signal);
        const { rec, rev } = await readReservations(target, signal);
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
          if (++finished % PRUNE_EVERY === 0) await prune(signal);
          return;
        }
      }
      throw new RpcError("CONFLICT");
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
    async hold(node, holder, revision, signal) {
      const { rec, rev } = await readReservations(node, signal);
      if (rev !== revision) return undefined;
      const next = create(ReservationsRecordSchema, {
        items: [
          ...rec.items,
          { migrationId: holder.id, vcpus: holder.vcpus, memoryBytes: holder.memoryBytes },
        ],
      });
      return {
        compare: { key: RESERVATIONS + node, modRevision: rev },
        op: reservationOps(node, next),
      };
    },
    async release(node, holderId, signal) {
      const { rec, rev } = await readReservations(node, signal);
      if (!rec.items.some((i) => i.migrationId === holderId)) return undefined;
      const next = create(ReservationsRecordSchema, {
        items: rec.items.filter((i) => i.migrationId !== holderId),
      });
      return {
        compare: { key: RESERVATIONS + node, modRevision: rev },
        op: reservationOps(node, next),
      };
    },
    async reserved(signal) {
      const byNode = new Map<string, Reserved>();
      const revisions = new Map<string, number>();
      const holders = new Map<string, Set<string>>();
      for await (const kv of rangeAll(store, RESERVATIONS, { signal })) {
        const node = kv.key.slice(RESERVATIONS.length);
        const rec = decodeMessage(ReservationsRecordSchema, kv);
        let vcpus = 0;
        let memoryBytes = 0n;
        for (const i of rec.items) {
          vcpus += i.vcpus;
          memoryBytes += i.memoryBytes;
        }
        byNode.set(node, { vcpus, memoryBytes });
        revisions.set(node, kv.modRevision);
        holders.set(node, new Set(rec.items.map((i) => i.migrationId)));
      }
      return { byNode, revisions, holders };
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

const notOwned = () =>
  new RpcError("CONFLICT", { message: "migration is now owned by another control-plane process" });

/** True while a migration has not reached a final state. */
export function isActive(state: MigrationState): boolean {
  return state === MigrationState.PENDING || state === MigrationState.RUNNING;
}
