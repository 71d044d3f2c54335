/**
 * The store writes of a migration's untold end (migration-settle-tell.ts):
 * the mark cleared once told, and the record's runner rewritten under a
 * compare-and-swap, to claim it (this process tells it) or to hand it off
 * (no process: another daemon's pass claims it).
 */
import { create } from "@bufbuild/protobuf";
import { MigrationRecordSchema, Untold } from "../gen/debvisor/store/v1/records_pb.js";
import { getMessage, type KvStore, updateMessage } from "../store/index.js";
import { enc, MIGRATION_RECORDS } from "./migration-record-keys.js";

/** The runner of a record handed off: no process, so any daemon's pass may claim it. */
export const NO_RUNNER = "";

/** Clears the mark of migration `id` (whatever its revision: told is told). */
export async function clearUntold(store: KvStore, id: string): Promise<void> {
  await updateMessage(store, MigrationRecordSchema, MIGRATION_RECORDS + id, (cur) =>
    cur !== undefined && cur.untold !== Untold.UNSPECIFIED
      ? create(MigrationRecordSchema, { ...cur, untold: Untold.UNSPECIFIED })
      : undefined,
  );
}

/**
 * Names `runner` the runner of migration `id`'s marked record, if it is
 * still as seen at `revision`; false when it changed (another process
 * claimed it, or it was told).
 */
export async function rewriteUntoldRunner(
  store: KvStore,
  id: string,
  revision: number,
  runner: string,
  signal?: AbortSignal,
): Promise<boolean> {
  const key = MIGRATION_RECORDS + id;
  const got = await getMessage(store, MigrationRecordSchema, key, { signal });
  if (got?.modRevision !== revision || got.message.untold === Untold.UNSPECIFIED) return false;
  const txn = await store.txn(
    {
      compares: [{ key, modRevision: revision }],
      success: [
        { type: "put", key, value: enc(create(MigrationRecordSchema, { ...got.message, runner })) },
      ],
    },
    { signal },
  );
  return txn.succeeded;
}
