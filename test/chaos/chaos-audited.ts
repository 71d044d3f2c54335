/**
 * The control plane's own acts in the audit trail, checked after the heal:
 * every restart of the failover controller that succeeded is in a daemon's
 * trail (as its `failover.decision`, or as `migration.settled` when its
 * controller died mid-restart and another settled it), and no migration
 * record is left marked untold, whatever was killed, paused or cut off
 * meanwhile (src/cluster/migration-settle-tell.ts).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FAILOVER_PRINCIPAL } from "../../src/cluster/index.js";
import { MigrationRecordSchema, Untold } from "../../src/gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationState } from "../../src/gen/debvisor/v1/migration_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../../src/store/index.js";
import { eventually } from "../helpers/eventually.js";
import type { ChaosHistory } from "./chaos-history.js";

/** The events a restart of the controller may be told as, by request id. */
const TOLD_AS = new Set(["failover.decision", "migration.settled"]);

/** The ids of the finished records still marked untold, and of the controller's restarts that succeeded. */
async function readRestarts(store: KvStore, signal: AbortSignal) {
  const untold: string[] = [];
  const restarts: string[] = [];
  for await (const kv of rangeAll(store, "migrations/", { signal })) {
    const r = decodeMessage(MigrationRecordSchema, kv);
    const m = r.migration;
    if (m === undefined) continue;
    const finished = m.state !== MigrationState.PENDING && m.state !== MigrationState.RUNNING;
    if (finished && r.untold !== Untold.UNSPECIFIED) untold.push(m.migrationId);
    if (
      m.kind === MigrationKind.FAILOVER &&
      m.requestedBy === FAILOVER_PRINCIPAL &&
      m.state === MigrationState.SUCCEEDED
    )
      restarts.push(m.migrationId);
  }
  return { untold, restarts };
}

/** The request ids of the records told as {@link TOLD_AS} in the trails of `daemonDirs`. */
function toldIds(daemonDirs: readonly string[]): Set<string> {
  const ids = new Set<string>();
  for (const dir of daemonDirs) {
    let text = "";
    try {
      text = readFileSync(join(dir, "audit.log"), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      if (line === "") continue;
      try {
        const r = JSON.parse(line) as { event?: string; requestId?: string; decision?: string };
        if (r.event !== undefined && TOLD_AS.has(r.event) && r.requestId !== undefined)
          if (r.event !== "failover.decision" || r.decision === "restarted") ids.add(r.requestId);
      } catch {
        // A line torn by a kill (repaired at the daemon's next start): not a record.
      }
    }
  }
  return ids;
}

/**
 * Waits up to `waitMs` for no record to be marked untold, then checks each
 * restart of the controller that succeeded against the trails; a violation
 * for each left marked or missing. Returns how many restarts were checked.
 */
export async function checkActsAudited(
  store: KvStore,
  daemonDirs: readonly string[],
  history: ChaosHistory,
  waitMs: number,
): Promise<number> {
  const read = () => readRestarts(store, AbortSignal.timeout(10_000));
  const seen = await eventually(
    async () => {
      const now = await read();
      if (now.untold.length > 0) throw new Error(`still untold: ${now.untold.join(" ")}`);
      return now;
    },
    { timeoutMs: waitMs, intervalMs: 500 },
  ).catch(async () => read());
  for (const id of seen.untold)
    history.violation("audited", `migration ${id} still marked untold ${waitMs} ms after the heal`);
  const told = toldIds(daemonDirs);
  for (const id of seen.restarts)
    if (!told.has(id))
      history.violation("audited", `the controller's restart ${id} is in no daemon's audit trail`);
  return seen.restarts.length;
}
