import type { MigrationRecord } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Migration,
  MigrationKind,
  MigrationPhase,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import type { EventSink } from "./event-recorder.js";
import { isActive } from "./migration-records.js";

/** Tells a migration's events as its record changes. */
export interface MigrationEvents {
  /** A record was written (or a final one settled): tells what changed since the last one. */
  changed(record: MigrationRecord): void;
}

/** Lower-case name of an enum member (`TRANSFERRING` -> `transferring`). */
const named = (names: Record<number, string>, v: number) => (names[v] ?? "unknown").toLowerCase();

/**
 * Events of migrations this process writes: started, each new phase, and the
 * end (succeeded, failed or cancelled, with the record's message), on the
 * migration; a VM moved by a migration also gets a Moved event (a failover's
 * VM gets Restarted from failover.ts). Progress within a phase is not an
 * event: WatchMigration streams it.
 */
export function createMigrationEvents(sink: EventSink | undefined): MigrationEvents {
  /** The last state and phase told per migration in flight. */
  const last = new Map<string, string>();
  return {
    changed(record) {
      const m = record.migration;
      if (sink === undefined || m === undefined) return;
      const id = m.migrationId;
      const now = `${m.state}:${m.phase}`;
      const before = last.get(id);
      if (before === now) return;
      const base = {
        kind: "migration" as const,
        id,
        tenant: record.tenant,
        source: "migration-engine",
      };
      const vm = m.vm?.vmId ?? "";
      const from = m.source?.nodeId?.id ?? "";
      const to = m.target?.nodeId?.id ?? "";
      if (isActive(m.state)) {
        last.set(id, now);
        if (before === undefined && m.state === MigrationState.RUNNING)
          sink.emit({
            ...base,
            type: "MigrationStarted",
            message: `${m.kind === MigrationKind.FAILOVER ? "failover" : m.live ? "live migration" : "offline move"} of ${vm} ${from} -> ${to}, requested by ${m.requestedBy}`,
          });
        else if (m.state === MigrationState.RUNNING)
          sink.emit({
            ...base,
            type: "MigrationPhase",
            message: `phase ${named(MigrationPhase, m.phase)}${m.message === "" ? "" : `: ${m.message}`}`,
          });
        return;
      }
      last.delete(id);
      finished(sink, base, m, vm, from, to);
    },
  };
}

function finished(
  sink: EventSink,
  base: { kind: "migration"; id: string; tenant: string; source: string },
  m: Migration,
  vm: string,
  from: string,
  to: string,
): void {
  const ok = m.state === MigrationState.SUCCEEDED;
  sink.emit({
    ...base,
    type: ok
      ? "MigrationSucceeded"
      : m.state === MigrationState.CANCELLED
        ? "MigrationCancelled"
        : "MigrationFailed",
    message: m.message,
    warning: !ok,
  });
  if (ok && m.kind !== MigrationKind.FAILOVER)
    sink.emit({
      kind: "vm",
      id: vm,
      tenant: base.tenant,
      type: "Moved",
      message: `moved ${from} -> ${to} by migration ${base.id} (${m.message})`,
      source: "migration-engine",
    });
}
