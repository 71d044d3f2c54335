/**
 * Where migrations live in the store and how their records are read: the
 * key families of records and per-VM locks, a record's id, VM and target,
 * its encoding, whether its state is final, and the CONFLICT a process
 * gets for a record another one now owns. Shared by the migration records'
 * parts (migration-records.ts, migration-reservations.ts, migration-finish.ts).
 */
import { RpcError } from "../core/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { encodeMessage } from "../store/index.js";

export const MIGRATION_RECORDS = "migrations/";
/** Key family of the per-VM migration locks: held while a migration or failover of the VM runs. */
export const MIGRATION_LOCKS = "migration-locks/";

/** A record's encoding for a write. */
export const enc = (r: MigrationRecord) => encodeMessage(MigrationRecordSchema, r);
/** A record's migration id ("" when it has none). */
export const idOf = (r: MigrationRecord) => r.migration?.migrationId ?? "";
/** The id of the VM a record moves ("" when it has none). */
export const vmOf = (r: MigrationRecord) => r.migration?.vm?.vmId ?? "";
/** The id of a record's target node ("" when it has none). */
export const targetOf = (r: MigrationRecord) => r.migration?.target?.nodeId?.id ?? "";

/** The CONFLICT for a write to a record whose runner is another process now. */
export const notOwned = () =>
  new RpcError("CONFLICT", { message: "migration is now owned by another control-plane process" });

/** True while a migration has not reached a final state. */
export function isActive(state: MigrationState): boolean {
  return state === MigrationState.PENDING || state === MigrationState.RUNNING;
}
