/*
 * The snapshot table hvctl prints for `snapshot list` and `snapshot prune`,
 * and why a snapshot is in use (never pruned).
 */
import { msFromTimestamp } from "../core/index.js";
import type { SnapshotInfo } from "../gen/debvisor/v1/storage_pb.js";
import { type Column, formatBytes, shortAge, tableTime } from "./output.js";

/** Why a snapshot is never pruned: held, protected, replication base; "" when none applies. */
export function inUse(s: SnapshotInfo): string {
  const why = [
    ...(s.userRefs > 0 || (s.held && !s.protected) ? ["held"] : []),
    ...(s.protected ? ["protected"] : []),
    ...(s.replicationBase ? ["replication base"] : []),
  ];
  return why.join(", ");
}

const age = (s: SnapshotInfo, now: number) =>
  s.created === undefined ? "-" : shortAge(now - msFromTimestamp(s.created));

/** The columns of a snapshot table (`snapshot list`, `snapshot prune`). */
export function snapshotColumns(now: number, first = "NAME"): Column<SnapshotInfo>[] {
  return [
    { header: first, value: (s) => s.ref?.snapshotName ?? "" },
    { header: "AGE", value: (s) => age(s, now) },
    { header: "SIZE", value: (s) => formatBytes(s.sizeBytes) },
    { header: "IN USE", value: (s) => inUse(s) || "-" },
    { header: "LABEL", wide: true, value: (s) => s.labels.label ?? "-" },
    { header: "HOLDS", wide: true, value: (s) => String(s.userRefs) },
    { header: "CREATED", wide: true, value: (s) => tableTime(s.created) },
  ];
}
