import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type DatasetRef,
  DatasetRefSchema,
  type SnapshotRef,
  SnapshotRefSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { CallError, UsageError } from "./cli-errors.js";

/** What --help says a DATASET is. */
export const DATASET_HELP =
  "DATASET is zfs:POOL/NAME (a ZFS dataset, like zfs:tank/vm-001-disk0) or rbd:POOL/IMAGE (a Ceph RBD image, like rbd:rbd/vm-001-disk0); without a prefix, POOL/NAME means ZFS";

/** A parsed DATASET argument, and whether it named its backend (a bare `tank/x` is ZFS by default). */
export interface DatasetArg {
  readonly ref: DatasetRef;
  readonly implicit: boolean;
}

// The naming rules the daemon enforces (src/drivers/storage-names.ts), checked
// here too so a typo is a usage error before anything is sent.
const ZFS_POOL = /^[A-Za-z][A-Za-z0-9_.:-]*$/;
const ZFS_RESERVED_POOL = /^(mirror|raidz|draid|spare|log$)/;
const ZFS_PART = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;
const RBD_PART = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$/;
/** Longest `pool/dataset@snapshot` ZFS takes; RBD names share the limit. */
const MAX_NAME = 255;

const bad = (what: string, text: string, why: string) =>
  new UsageError(
    `${what}: ${why}, got "${text}" (zfs:POOL/NAME, rbd:POOL/IMAGE, or POOL/NAME for ZFS)`,
  );

/**
 * Parses `zfs:POOL/NAME`, `rbd:POOL/IMAGE` or a bare `POOL/NAME` (ZFS).
 * Anything else, a snapshot part (`@`) included, is a UsageError naming `what`.
 */
export function parseDataset(what: string, text: string): DatasetArg {
  const colon = text.indexOf(":");
  const slash = text.indexOf("/");
  let backend = StorageBackend.BACKEND_ZFS;
  let rest = text;
  let implicit = true;
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    const prefix = text.slice(0, colon);
    if (prefix !== "zfs" && prefix !== "rbd")
      throw bad(what, text, `unknown storage "${prefix}:" (zfs: or rbd:)`);
    backend = prefix === "zfs" ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD;
    rest = text.slice(colon + 1);
    implicit = false;
  }
  if (rest.includes("@")) throw bad(what, text, "names a snapshot (@); give the dataset alone");
  const at = rest.indexOf("/");
  const pool = at < 0 ? "" : rest.slice(0, at);
  const name = at < 0 ? "" : rest.slice(at + 1);
  if (pool === "" || name === "") throw bad(what, text, "expected POOL/NAME");
  if (rest.length > MAX_NAME) throw bad(what, text, `longer than ${MAX_NAME} characters`);
  if (backend === StorageBackend.BACKEND_ZFS) {
    if (!ZFS_POOL.test(pool) || ZFS_RESERVED_POOL.test(pool))
      throw bad(what, text, `"${pool}" is not a ZFS pool name`);
    if (name.split("/").some((p) => !ZFS_PART.test(p) || p === "." || p === ".."))
      throw bad(what, text, `"${name}" is not a ZFS dataset name`);
  } else {
    if (!RBD_PART.test(pool) || pool.length > 128)
      throw bad(what, text, `"${pool}" is not an RBD pool name`);
    if (!RBD_PART.test(name))
      throw bad(what, text, `"${name}" is not an RBD image name (letters, digits, _ . -)`);
  }
  return { ref: create(DatasetRefSchema, { backend, pool, name }), implicit };
}

/** Checks a snapshot's own name (the part after `@`). */
export function checkSnapshotName(what: string, name: string): string {
  if (!SNAPSHOT_NAME.test(name) || name.length > MAX_NAME)
    throw new UsageError(
      `${what}: "${name}" is not a snapshot name (letters, digits, _ . : -, starting alphanumeric)`,
    );
  return name;
}

/**
 * Parses a snapshot given as `DATASET@NAME`, or as DATASET and NAME in two
 * arguments (`snapshot` set), into a reference.
 */
export function parseSnapshot(
  what: string,
  text: string,
  snapshot?: string,
): { ref: SnapshotRef; implicit: boolean } {
  let datasetText = text;
  let name = snapshot;
  const at = text.indexOf("@");
  if (at >= 0) {
    if (snapshot !== undefined)
      throw new UsageError(
        `${what}: give the snapshot as DATASET@NAME or as DATASET NAME, not both`,
      );
    datasetText = text.slice(0, at);
    name = text.slice(at + 1);
  }
  if (name === undefined || name === "")
    throw new UsageError(`${what}: expected DATASET@NAME (or DATASET NAME), got "${text}"`);
  const dataset = parseDataset(what, datasetText);
  return {
    ref: create(SnapshotRefSchema, {
      dataset: dataset.ref,
      snapshotName: checkSnapshotName(what, name),
    }),
    implicit: dataset.implicit,
  };
}

/** Parses an RBD image given as `POOL/IMAGE` (or `rbd:POOL/IMAGE`). */
export function parseImage(what: string, text: string): DatasetRef {
  if (text.startsWith("zfs:"))
    throw new UsageError(`${what}: images are Ceph RBD images (POOL/IMAGE), got "${text}"`);
  return parseDataset(what, text.startsWith("rbd:") ? text : `rbd:${text}`).ref;
}

/** Parses an RBD snapshot given as `POOL/IMAGE@SNAP` (or `rbd:POOL/IMAGE@SNAP`). */
export function parseImageSnapshot(what: string, text: string): SnapshotRef {
  if (text.startsWith("zfs:"))
    throw new UsageError(`${what}: templates are RBD snapshots (POOL/IMAGE@SNAP), got "${text}"`);
  return parseSnapshot(what, text.startsWith("rbd:") ? text : `rbd:${text}`).ref;
}

/** Checks a snapshot label: letters, digits and _ . -, starting alphanumeric, at most 80. */
export function checkLabel(flag: string, label: string): string {
  if (!LABEL.test(label))
    throw new UsageError(
      `${flag}: at most 80 letters, digits and _ . -, starting alphanumeric, got "${label}"`,
    );
  return label;
}

/** A dataset as hvctl takes it: `zfs:tank/vm-001-disk0`. */
export function datasetText(ref: DatasetRef | undefined): string {
  if (ref === undefined) return "-";
  const backend =
    ref.backend === StorageBackend.BACKEND_ZFS
      ? "zfs:"
      : ref.backend === StorageBackend.BACKEND_RBD
        ? "rbd:"
        : "";
  return `${backend}${ref.pool}/${ref.name}`;
}

/** A snapshot as hvctl takes it: `zfs:tank/vm-001-disk0@daily-20261122T000000Z`. */
export function snapshotText(ref: SnapshotRef | undefined): string {
  return ref === undefined ? "-" : `${datasetText(ref.dataset)}@${ref.snapshotName}`;
}

/** The note for a NOT_FOUND on a bare `POOL/NAME`, which was read as ZFS. */
export function implicitZfsNote(text: string): string {
  return `note: ${text} was read as a ZFS dataset (zfs:${text}); for a Ceph RBD image write rbd:${text}\n`;
}

/**
 * Runs a call on a dataset; when it was a bare `POOL/NAME` and the answer is
 * NOT_FOUND, first notes that it was read as ZFS (an RBD image needs `rbd:`).
 */
export async function noteImplicitZfs<T>(
  err: (text: string) => void,
  arg: { readonly implicit: boolean },
  text: string,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (arg.implicit && e instanceof CallError && e.code === grpc.status.NOT_FOUND)
      err(implicitZfsNote(text.split("@")[0] ?? text));
    throw e;
  }
}
