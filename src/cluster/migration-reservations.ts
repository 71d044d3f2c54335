/**
 * The capacity held on target nodes (`reservations/<node>`): each in-flight
 * migration's, and a VM creation's until its operation settles (holder
 * `create:<operation id>`). Read, summed per node, and changed only through
 * the compare and write a caller puts in its own transaction. Part of
 * `createMigrationRecords` (migration-records.ts).
 */
import { create } from "@bufbuild/protobuf";
import {
  type ReservationsRecord,
  ReservationsRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
  type TxnOp,
} from "../store/index.js";
import type { Reserved } from "./free-capacity.js";
import type { MigrationRecords } from "./migration-records.js";

export const RESERVATIONS = "reservations/";

/** The reservations of {@link MigrationRecords}, and a node's record as stored. */
export interface MigrationReservations
  extends Pick<MigrationRecords, "hold" | "release" | "reserved"> {
  /** A node's reservations and their revision (an empty record and 0 when it has none). */
  read(node: string, signal?: AbortSignal): Promise<{ rec: ReservationsRecord; rev: number }>;
}

/** The write that stores a node's reservations `rec`: a delete once it holds none. */
export function reservationOps(node: string, rec: ReservationsRecord): TxnOp {
  return rec.items.length === 0
    ? { type: "delete", key: RESERVATIONS + node }
    : {
        type: "put",
        key: RESERVATIONS + node,
        value: encodeMessage(ReservationsRecordSchema, rec),
      };
}

/** Creates the store-backed {@link MigrationReservations}. */
export function createMigrationReservations(store: KvStore): MigrationReservations {
  async function readReservations(node: string, signal?: AbortSignal) {
    const got = await getMessage(store, ReservationsRecordSchema, RESERVATIONS + node, { signal });
    return {
      rec: got?.message ?? create(ReservationsRecordSchema, {}),
      rev: got?.modRevision ?? 0,
    };
  }

  return {
    read: readReservations,
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
