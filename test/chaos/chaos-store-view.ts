import {
  MigrationRecordSchema,
  ReservationsRecordSchema,
  VmRecordSchema,
} from "../../src/gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../../src/gen/debvisor/v1/migration_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../../src/store/index.js";

/** What the store says, read once: VMs, migrations, migration locks, reservations. */
export interface StoreView {
  readonly vms: ReadonlyMap<
    string,
    { node: string; ha: boolean; managed: boolean; desiredRunning: boolean; generation: bigint }
  >;
  /** Migrations not final (PENDING or RUNNING), as "id vm source->target state". */
  readonly openMigrations: string[];
  /** Keys under migration-locks/. */
  readonly locks: string[];
  /** Reservations still held, as "node: migration". */
  readonly reservations: string[];
}

const OPEN = new Set([MigrationState.PENDING, MigrationState.RUNNING]);

/** Reads the store the control plane keeps (the same keys the daemons use). */
export async function readStoreView(store: KvStore, signal: AbortSignal): Promise<StoreView> {
  const vms = new Map<
    string,
    { node: string; ha: boolean; managed: boolean; desiredRunning: boolean; generation: bigint }
  >();
  for await (const kv of rangeAll(store, "vms/", { signal })) {
    const r = decodeMessage(VmRecordSchema, kv);
    vms.set(r.id, {
      node: r.nodeId,
      ha: r.spec?.ha === true,
      managed: r.managed,
      desiredRunning: r.desiredState === 1,
      generation: r.generation,
    });
  }
  const openMigrations: string[] = [];
  for await (const kv of rangeAll(store, "migrations/", { signal })) {
    const m = decodeMessage(MigrationRecordSchema, kv).migration;
    if (m === undefined || !OPEN.has(m.state)) continue;
    openMigrations.push(
      `${m.migrationId} ${m.vm?.vmId} ${m.source?.nodeId?.id}->${m.target?.nodeId?.id} ${MigrationState[m.state]}`,
    );
  }
  const locks: string[] = [];
  for await (const kv of rangeAll(store, "migration-locks/", { signal })) locks.push(kv.key);
  const reservations: string[] = [];
  for await (const kv of rangeAll(store, "reservations/", { signal })) {
    const r = decodeMessage(ReservationsRecordSchema, kv);
    for (const i of r.items) reservations.push(`${kv.key}: ${i.migrationId}`);
  }
  return { vms, openMigrations, locks, reservations };
}
