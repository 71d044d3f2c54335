/*
 * How a migration reads to people: its state, phase and kind names, the
 * migration table's columns, the fields of `migration get|cancel`, and what
 * a progress line of one shows.
 */
import {
  type Migration,
  MigrationKind,
  MigrationPhase,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import { type Column, formatBytes, renderFields, type Style, tableTime } from "./output.js";
import type { ProgressUpdate } from "./progress.js";

/** An enum value's name for people (`ROLLED_BACK` reads `Rolled back`), `Unknown` for none. */
export const title = (name: string | undefined) =>
  name === undefined ? "Unknown" : name.charAt(0) + name.slice(1).toLowerCase().replace(/_/g, " ");

/** Succeeded, Failed, ... coloured on a terminal. */
export function migrationState(state: MigrationState, style: Style): string {
  const text = title(MigrationState[state]);
  if (state === MigrationState.SUCCEEDED) return style.good(text);
  if (state === MigrationState.FAILED) return style.bad(text);
  if (state === MigrationState.RUNNING || state === MigrationState.PENDING) return style.warn(text);
  return text;
}

/** The phase a migration is in, in lower case (`transferring`). */
export const phaseName = (m: Migration) => title(MigrationPhase[m.phase]).toLowerCase();
const kindName = (m: Migration) => title(MigrationKind[m.kind]).toLowerCase();

/** The columns of a migration table (`migration list`). */
export function migrationColumns(style: Style): Column<Migration>[] {
  return [
    { header: "ID", value: (m) => m.migrationId },
    { header: "VM", value: (m) => m.vm?.vmId ?? "" },
    { header: "FROM", value: (m) => m.source?.nodeId?.id ?? "" },
    { header: "TO", value: (m) => m.target?.nodeId?.id ?? "" },
    { header: "KIND", value: kindName },
    { header: "STATE", value: (m) => migrationState(m.state, style) },
    { header: "PHASE", value: phaseName },
    { header: "PROGRESS", value: (m) => `${m.progressPct}%`, sort: (m) => m.progressPct },
    { header: "STARTED", value: (m) => tableTime(m.created) },
    { header: "MODE", wide: true, value: (m) => (m.live ? "live" : "offline") },
    { header: "BY", wide: true, value: (m) => m.requestedBy || "-" },
    { header: "MESSAGE", wide: true, value: (m) => m.message || "-" },
  ];
}

/** One migration as `key: value` lines (`migration get`, `migration cancel`). */
export function migrationFields(m: Migration, style: Style): string {
  return renderFields([
    ["id", m.migrationId],
    ["vm", m.vm?.vmId ?? ""],
    ["from", m.source?.nodeId?.id ?? ""],
    ["to", m.target?.nodeId?.id ?? ""],
    ["kind", kindName(m)],
    ["mode", m.live ? "live" : "offline (the vm is stopped while it moves)"],
    ["state", migrationState(m.state, style)],
    ["phase", phaseName(m)],
    ["progress", `${m.progressPct}%`],
    [
      "transferred",
      m.bytesTotal > 0n
        ? `${formatBytes(m.bytesTransferred)} of ${formatBytes(m.bytesTotal)}`
        : "-",
    ],
    ["requested by", m.requestedBy || "-"],
    ["started", tableTime(m.created)],
    ["finished", tableTime(m.finished)],
    ["message", m.message || "-"],
  ]);
}

/** What a progress line of a migration shows. */
export function migrationProgress(m: Migration): ProgressUpdate {
  return {
    phase: phaseName(m),
    ...(m.downtimeEstimateMs > 0 ? { detail: `downtime ~${m.downtimeEstimateMs} ms` } : {}),
    percent: m.progressPct,
    ...(m.bytesTotal > 0n ? { doneBytes: m.bytesTransferred, totalBytes: m.bytesTotal } : {}),
  };
}
