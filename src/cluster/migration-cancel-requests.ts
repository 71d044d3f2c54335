import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import {
  decodeMessage,
  getMessage,
  type KvStore,
  keyValueOf,
  updateMessage,
} from "../store/index.js";
import { isActive, MIGRATION_RECORDS } from "./migration-records.js";

/** The pause before a lost watch of a record is opened again. */
const REWATCH_MS = 1000;

/**
 * Cancellation asked of a control-plane process that does not run the
 * migration (behind a load balancer a client cannot pick the one that
 * does): the flag is written on the migration's record, and its runner,
 * which watches the record while it runs, cancels as if asked itself.
 */
export interface CancelRequests {
  /** Flags the migration for cancellation; false when it is no longer active (finished, or gone). */
  request(id: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * Resolves once the migration's record is flagged (or gone), watching it
   * until `signal` aborts (then it rejects); a lost watch is opened again.
   */
  requested(id: string, signal: AbortSignal): Promise<void>;
}

/** Creates the {@link CancelRequests} over `store`. */
export function createCancelRequests(store: KvStore): CancelRequests {
  const key = (id: string) => MIGRATION_RECORDS + id;
  /** Whether the record as stored now is flagged or gone; else the revision to watch from. */
  async function look(id: string, signal: AbortSignal): Promise<number | undefined> {
    const from = await store.revision({ signal });
    const got = await getMessage(store, MigrationRecordSchema, key(id), { signal });
    return got === undefined || got.message.cancelRequested ? undefined : from + 1;
  }
  return {
    async request(id, signal) {
      let active = false;
      await updateMessage(
        store,
        MigrationRecordSchema,
        key(id),
        (current) => {
          active = isActive(current?.migration?.state ?? MigrationState.UNSPECIFIED);
          if (current === undefined || !active || current.cancelRequested) return undefined;
          return create(MigrationRecordSchema, { ...current, cancelRequested: true });
        },
        { signal },
      );
      return active;
    },
    async requested(id, signal) {
      for (;;) {
        try {
          const from = await look(id, signal);
          if (from === undefined) return;
          for await (const e of store.watch(key(id), from, { signal })) {
            if (e.key !== key(id)) continue;
            if (e.type === "delete") return;
            if (decodeMessage(MigrationRecordSchema, keyValueOf(e)).cancelRequested) return;
          }
        } catch (err) {
          if (signal.aborted) throw err;
        }
        await sleep(REWATCH_MS, undefined, { signal });
      }
    },
  };
}
