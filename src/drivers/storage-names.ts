import { invalid } from "../core/index.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";

/** Longest full ZFS name (`pool/dataset@snapshot`): ZFS_MAX_DATASET_NAME_LEN less the NUL. */
export const ZFS_MAX_NAME = 255;
/** Longest RBD image or snapshot name we accept. */
export const RBD_MAX_NAME = 255;
/** Longest snapshot label. */
export const MAX_LABEL = 80;

/** Letters, digits and `_ . : -` (ZFS also allows spaces; we never make or accept them). */
const ZFS_COMPONENT = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;
/** ZFS pool names start with a letter; these prefixes name vdev types and are reserved. */
const ZFS_POOL = /^[A-Za-z][A-Za-z0-9_.:-]*$/;
const ZFS_RESERVED_POOL = /^(mirror|raidz|draid|spare|log$)/;
const RBD_POOL = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const RBD_IMAGE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** Snapshot names both backends accept (the part after `@`). */
const SNAPSHOT = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const STAMPED = /^(.+)-(\d{8}T\d{6}Z)$/;

/**
 * Checks a dataset reference against its backend's naming rules and returns
 * the name the backend's CLI takes (`tank/vm-1` for both). INVALID_ARGUMENT
 * naming the field otherwise: no name reaching a command can start with `-`,
 * hold `@`, a space, `//` or a `.`/`..` component.
 */
export function backendName(dataset: DatasetRef, field = "dataset"): string {
  const { pool, name } = dataset;
  if (dataset.backend === StorageBackend.BACKEND_ZFS) {
    if (!ZFS_POOL.test(pool) || ZFS_RESERVED_POOL.test(pool))
      throw invalid(`${field}.pool: not a valid ZFS pool name`);
    const parts = name.split("/");
    if (parts.some((p) => !ZFS_COMPONENT.test(p) || p === "." || p === ".."))
      throw invalid(`${field}.name: not a valid ZFS dataset name`);
    const full = `${pool}/${name}`;
    if (full.length > ZFS_MAX_NAME)
      throw invalid(`${field}: longer than ${ZFS_MAX_NAME} characters`);
    return full;
  }
  if (dataset.backend === StorageBackend.BACKEND_RBD) {
    if (!RBD_POOL.test(pool) || pool.length > 128)
      throw invalid(`${field}.pool: not a valid RBD pool name`);
    if (!RBD_IMAGE.test(name) || name.length > RBD_MAX_NAME)
      throw invalid(`${field}.name: not a valid RBD image name (no '/', '@' or ':')`);
    return `${pool}/${name}`;
  }
  throw invalid(`${field}.backend: must be BACKEND_ZFS or BACKEND_RBD`);
}

/** Checks a snapshot name for the dataset's backend and returns `pool/name@snapshot`. */
export function snapshotSpec(dataset: DatasetRef, snapshot: string, field = "snapshot"): string {
  const base = backendName(dataset, `${field}.dataset`);
  if (!SNAPSHOT.test(snapshot))
    throw invalid(`${field}.snapshot_name: letters, digits and _ . : -, starting alphanumeric`);
  const full = `${base}@${snapshot}`;
  if (snapshot.length > RBD_MAX_NAME)
    throw invalid(`${field}.snapshot_name: longer than ${RBD_MAX_NAME} characters`);
  if (dataset.backend === StorageBackend.BACKEND_ZFS && full.length > ZFS_MAX_NAME)
    throw invalid(`${field}: pool/dataset@snapshot is longer than ${ZFS_MAX_NAME} characters`);
  return full;
}

/** Checks a snapshot label (the part before the timestamp). */
export function checkLabel(label: string, field = "label"): void {
  if (label.length > MAX_LABEL || !LABEL.test(label))
    throw invalid(
      `${field}: at most ${MAX_LABEL} letters, digits and _ . -, starting alphanumeric`,
    );
}

/**
 * The name of a snapshot taken at `ms` with `label`: `label-YYYYMMDDTHHMMSSZ`
 * (UTC, to the second), for example `daily-20261122T140502Z`.
 */
export function stampedSnapshotName(label: string, ms: number): string {
  checkLabel(label);
  const stamp = new Date(Math.floor(ms / 1000) * 1000)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}Z$/, "Z");
  return `${label}-${stamp}`;
}

/**
 * The name of the next snapshot of `label` among `existing` names: stamped
 * `ms`, or one second after the label's newest stamp when that is not
 * earlier (a second run within one second, a clock that stepped back). So
 * the label's names sort in the order they were taken, and a name that
 * pruning freed is never taken again for other data.
 */
export function nextStampedName(label: string, ms: number, existing: Iterable<string>): string {
  let newest = Number.NEGATIVE_INFINITY;
  for (const name of existing) {
    const m = STAMPED.exec(name);
    const at = m?.[1] === label ? stampMs(m[2] ?? "") : Number.NaN;
    if (!Number.isNaN(at)) newest = Math.max(newest, at);
  }
  return stampedSnapshotName(label, Math.max(ms, newest + 1000));
}

/** The time of a stamp made by {@link stampedSnapshotName} (YYYYMMDDTHHMMSSZ), in epoch ms. */
function stampMs(stamp: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(stamp);
  if (m === null) return Number.NaN;
  const [y, mo, d, h, mi, sec] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return Date.UTC(y, mo - 1, d, h, mi, sec);
}

/** The label of a name made by {@link stampedSnapshotName}, or undefined for other names. */
export function labelOf(snapshotName: string): string | undefined {
  return STAMPED.exec(snapshotName)?.[1];
}

/** The `labels` map a snapshot listing carries: `{label}` for stamped names, else empty. */
export function snapshotLabels(snapshotName: string): Record<string, string> {
  const label = labelOf(snapshotName);
  return label === undefined ? {} : { label };
}
