import { msFromTimestamp, sameNode } from "../core/index.js";
import { type Migration, MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { isActive } from "./migration-records.js";

/**
 * How long after a migration succeeded the same MigrateVM, retried, answers
 * with its outcome instead of moving the VM again (clients of the upstream
 * contract retry after a deadline and have no migration id to ask about).
 */
export const RETRY_WINDOW_MS = 10 * 60_000;

/** What a MigrateVM call asked for, as a retry is recognised by. */
export interface MigrateSpec {
  readonly vmId: string;
  readonly source?: string;
  readonly target?: string;
  readonly allowDowntime: boolean;
  readonly requestedBy: string;
}

const same = (a: string | undefined, b: string | undefined) =>
  (a ?? "").toLowerCase() === (b ?? "").toLowerCase();

/**
 * The earlier attempt a MigrateVM call retries, if any: the newest migration
 * of the VM, when it is a MIGRATE asked by the same principal with the same
 * spec (a target or source left empty matches any) and is either still in
 * flight (attach to it) or succeeded within {@link RETRY_WINDOW_MS} (answer
 * its outcome). A failed or cancelled attempt is not returned: the retry
 * tries again. `migrations` are newest first, as the engine lists them.
 */
export function retriedMigration(
  migrations: readonly Migration[],
  spec: MigrateSpec,
  nowMs: number,
): Migration | undefined {
  const newest = migrations.find((m) => same(m.vm?.vmId, spec.vmId));
  if (newest === undefined) return undefined;
  if (
    newest.kind !== MigrationKind.MIGRATE ||
    newest.requestedBy !== spec.requestedBy ||
    newest.allowDowntime !== spec.allowDowntime ||
    (spec.target !== undefined &&
      spec.target !== "" &&
      !sameNode(newest.target?.nodeId?.id ?? "", spec.target)) ||
    (spec.source !== undefined &&
      spec.source !== "" &&
      !sameNode(newest.source?.nodeId?.id ?? "", spec.source))
  )
    return undefined;
  if (isActive(newest.state)) return newest;
  if (
    newest.state === MigrationState.SUCCEEDED &&
    nowMs - msFromTimestamp(newest.finished ?? newest.updated) <= RETRY_WINDOW_MS
  )
    return newest;
  return undefined;
}
