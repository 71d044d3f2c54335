import { abortError, RpcError } from "../core/index.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import { jobActive, type MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import { isActive } from "./migration-records.js";
import { migrationOf } from "./migration-wire.js";

/** Following one migration to its end. */
export interface MigrationWatch {
  /** The job a caller of `tenant` (undefined: cluster-wide) may see; MIGRATION_NOT_FOUND otherwise. */
  load(id: string, tenant: string | undefined, signal?: AbortSignal): Promise<MigrationJob>;
  /** The migration now, then each change, until it finishes. */
  watch(id: string, tenant: string | undefined, signal: AbortSignal): AsyncIterable<Migration>;
  /** Resolves with the migration once it has finished. */
  wait(id: string, signal: AbortSignal): Promise<Migration>;
}

/**
 * Follows migrations: those this process runs are told by the journal as
 * they change (and looked at every 5 s besides); others (another process
 * runs them) are read from the store every 500 ms.
 */
export function createMigrationWatch(
  journal: MigrationJournal,
  runsHere: (id: string) => boolean,
): MigrationWatch {
  async function load(id: string, tenant: string | undefined, signal?: AbortSignal) {
    const job = await journal.get(id, signal);
    if (job === undefined || (tenant !== undefined && job.tenant !== tenant))
      throw new RpcError("MIGRATION_NOT_FOUND");
    return job;
  }

  async function* watch(id: string, tenant: string | undefined, signal: AbortSignal) {
    let last = await load(id, tenant, signal);
    const queue: MigrationJob[] = [];
    let wake: (() => void) | undefined;
    const stop = journal.subscribe(id, (job) => {
      queue.push(job);
      wake?.();
    });
    try {
      yield migrationOf(last);
      while (jobActive(last)) {
        if (queue.length === 0) {
          await new Promise<void>((resolve) => {
            const done = () => {
              clearTimeout(t);
              signal.removeEventListener("abort", done);
              resolve();
            };
            const t = setTimeout(done, runsHere(id) ? 5000 : 500);
            wake = done;
            signal.addEventListener("abort", done, { once: true });
          });
          wake = undefined;
          signal.throwIfAborted();
          if (queue.length === 0) {
            const fresh = await journal.get(id, signal);
            if (fresh !== undefined) queue.push(fresh);
          }
        }
        const next = queue.shift();
        if (next === undefined) continue;
        last = next;
        yield migrationOf(last);
      }
    } finally {
      stop();
    }
  }

  return {
    load,
    watch,
    async wait(id, signal) {
      for await (const m of watch(id, undefined, signal)) {
        if (!isActive(m.state)) return m;
      }
      throw abortError(signal);
    },
  };
}
