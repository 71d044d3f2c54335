import { create } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import {
  type CommandOutput,
  type CommandRunner,
  type CommandSpec,
  commandFailed,
  createLocalRunner,
  runCommand,
} from "./storage-command.js";
import type { RbdImageDriver, SnapshotTarget } from "./storage-driver.js";
import { backendName, snapshotLabels, snapshotSpec } from "./storage-names.js";

/** Options of {@link createRbdDriver}. */
export interface RbdDriverOptions {
  /** Where commands run (default: this host). */
  readonly runner?: CommandRunner;
  /** The rbd program (default `rbd` from PATH). */
  readonly command?: string;
  /** Limit of every command (default 120 s). */
  readonly timeoutMs?: number;
  /** Arguments before the subcommand, such as `--id debvisor --conf /etc/ceph/ceph.conf`. */
  readonly globalArgs?: readonly string[];
}

/** An errno as `rbd` reports it: `(17) File exists`, and as its exit status. */
const ENOENT = 2;
const EBUSY = 16;
const EEXIST = 17;
const EINVAL = 22;
/** ctime(3) as rbd prints snapshot timestamps; the commands run with TZ=UTC. */
const CTIME =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** One entry of `rbd snap ls --format json`. */
interface RbdSnap {
  id: number;
  name: string;
  size: number;
  protected: "true" | "false";
  timestamp: string;
}

/** What `rbd info --format json` says of an image's parent. */
interface RbdInfo {
  parent?: { pool?: string; pool_namespace?: string; image?: string; snapshot?: string };
}

/** One entry of `rbd children --all --format json`. */
interface RbdChild {
  pool: string;
  pool_namespace: string;
  image: string;
}

/**
 * The Ceph RBD backend over the `rbd` command line (`--format json`),
 * argument arrays only, names checked first, a timeout on every command.
 * RBD errors arrive as an errno in the exit status and the message.
 */
export function createRbdDriver(options: RbdDriverOptions = {}): RbdImageDriver {
  const runner = options.runner ?? createLocalRunner();
  const file = options.command ?? "rbd";
  const timeoutMs = options.timeoutMs ?? 120_000;
  const globalArgs = options.globalArgs ?? [];

  const run = async (args: string[], signal: AbortSignal) => {
    const spec: CommandSpec = {
      file,
      args: [...globalArgs, ...args],
      timeoutMs,
      signal,
      env: { TZ: "UTC", LC_ALL: "C" },
    };
    return { spec, out: await runCommand(runner, spec) };
  };
  const fail = (spec: CommandSpec, out: CommandOutput, byErrno: Record<number, ReasonName>) => {
    const errno = errnoOf(out);
    const reason = errno === undefined ? undefined : byErrno[errno];
    const cause = commandFailed(spec, out);
    return reason === undefined || out.aborted || out.timedOut
      ? cause
      : new RpcError(reason, { cause: cause.cause });
  };
  const list = async (dataset: DatasetRef, signal: AbortSignal) => {
    const { spec, out } = await run(
      ["snap", "ls", "--format", "json", backendName(dataset)],
      signal,
    );
    if (out.code !== 0) {
      const err = fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND" });
      if (err.reason === "DATASET_NOT_FOUND") return undefined;
      throw err;
    }
    return parseRbdSnapshots(out.stdout, dataset, spec);
  };
  const find = async (target: SnapshotTarget, signal: AbortSignal) => {
    const snaps = await list(target.dataset, signal);
    if (snaps === undefined) throw new RpcError("DATASET_NOT_FOUND");
    const snap = snaps.find((s) => s.ref?.snapshotName === target.name);
    if (snap === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
    return snap;
  };

  const clonesOf = async (target: SnapshotTarget, signal: AbortSignal) => {
    const full = snapshotSpec(target.dataset, target.name);
    const { spec, out } = await run(["children", "--all", "--format", "json", full], signal);
    if (out.code !== 0) throw fail(spec, out, { [ENOENT]: "SNAPSHOT_NOT_FOUND" });
    return parseRbdChildren(out.stdout, spec);
  };

  return {
    listSnapshots: (dataset, signal) => list(dataset, signal),
    async createSnapshot(target, signal) {
      const full = snapshotSpec(target.dataset, target.name);
      const { spec, out } = await run(["snap", "create", "--no-progress", full], signal);
      if (out.code !== 0)
        throw fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND", [EEXIST]: "SNAPSHOT_EXISTS" });
      return find(target, signal);
    },
    async deleteSnapshot(target, signal) {
      const full = snapshotSpec(target.dataset, target.name);
      const snap = await find(target, signal);
      if (snap.protected) {
        // Ceph refuses to unprotect while clones depend on the snapshot: that is the check.
        const { spec, out } = await run(["snap", "unprotect", full], signal);
        if (out.code !== 0)
          throw fail(spec, out, { [ENOENT]: "SNAPSHOT_NOT_FOUND", [EBUSY]: "SNAPSHOT_HAS_CLONES" });
      }
      const { spec, out } = await run(["snap", "rm", "--no-progress", full], signal);
      if (out.code !== 0) {
        // Not removed: a template must not stay unprotected (clones refused, prunable).
        if (snap.protected)
          await run(["snap", "protect", full], AbortSignal.timeout(30_000)).catch(() => undefined);
        throw fail(spec, out, { [ENOENT]: "SNAPSHOT_NOT_FOUND", [EBUSY]: "SNAPSHOT_HELD" });
      }
    },
    async protectSnapshot(target, signal) {
      const full = snapshotSpec(target.dataset, target.name);
      if ((await find(target, signal)).protected) return;
      const { spec, out } = await run(["snap", "protect", full], signal);
      // EBUSY: protected by someone else in between, which is what was asked.
      if (out.code !== 0 && errnoOf(out) !== EBUSY)
        throw fail(spec, out, { [ENOENT]: "SNAPSHOT_NOT_FOUND" });
    },
    listClones: clonesOf,
    async imageParent(image, signal) {
      const { spec, out } = await run(["info", "--format", "json", backendName(image)], signal);
      if (out.code !== 0) throw fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND" });
      return parseRbdParent(out.stdout, spec);
    },
    async deleteImage(image, signal) {
      const name = backendName(image);
      const snaps = await list(image, signal);
      if (snaps === undefined) throw new RpcError("DATASET_NOT_FOUND");
      const templates = snaps.filter((s) => s.protected);
      for (const t of templates) {
        const target = { dataset: image, name: t.ref?.snapshotName ?? "" };
        if ((await clonesOf(target, signal)).length > 0) throw new RpcError("IMAGE_HAS_CLONES");
      }
      for (const t of templates) {
        const full = snapshotSpec(image, t.ref?.snapshotName ?? "");
        const { spec, out } = await run(["snap", "unprotect", full], signal);
        // EBUSY: a clone appeared meanwhile.
        if (out.code !== 0) throw fail(spec, out, { [EBUSY]: "IMAGE_HAS_CLONES" });
      }
      if (snaps.length > 0) {
        const { spec, out } = await run(["snap", "purge", "--no-progress", name], signal);
        if (out.code !== 0) throw fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND" });
      }
      const { spec, out } = await run(["rm", "--no-progress", name], signal);
      // EBUSY: the image is open (watched) by a client, such as a running VM.
      if (out.code !== 0)
        throw fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND", [EBUSY]: "IMAGE_IN_USE" });
    },
    async flattenImage(image, signal) {
      const { spec, out } = await run(["flatten", "--no-progress", backendName(image)], signal);
      if (out.code !== 0)
        throw fail(spec, out, { [ENOENT]: "DATASET_NOT_FOUND", [EINVAL]: "IMAGE_NOT_A_CLONE" });
    },
    async cloneSnapshot(target, image, signal) {
      const full = snapshotSpec(target.dataset, target.name);
      const { spec, out } = await run(["clone", full, backendName(image, "new_image")], signal);
      if (out.code !== 0)
        throw fail(spec, out, { [ENOENT]: "SNAPSHOT_NOT_FOUND", [EEXIST]: "DATASET_EXISTS" });
    },
  };
}

type ReasonName = ConstructorParameters<typeof RpcError>[0];

/** The errno of a failed rbd command: its exit status, or the `(N)` in its message. */
function errnoOf(out: CommandOutput): number | undefined {
  if (out.code !== null && out.code > 1) return out.code;
  const m = /\((\d+)\) [A-Z][^\n]*$/m.exec(out.stderr);
  return m === null ? undefined : Number(m[1]);
}

function unexpected(spec: CommandSpec, text: string): RpcError {
  return new RpcError("STORAGE_UNAVAILABLE", {
    cause: new Error(
      `unexpected output of ${spec.file} ${spec.args.join(" ")}: ${text.slice(0, 300)}`,
    ),
  });
}

/** The JSON array an `rbd ... --format json` printed (nothing printed: empty). */
function jsonArray<T>(stdout: string, spec: CommandSpec): T[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout.trim() === "" ? "[]" : stdout);
  } catch {
    throw unexpected(spec, stdout);
  }
  if (!Array.isArray(parsed)) throw unexpected(spec, stdout);
  return parsed as T[];
}

/** Parses `rbd snap ls --format json` (compact or pretty). */
export function parseRbdSnapshots(
  stdout: string,
  dataset: DatasetRef,
  spec: CommandSpec,
): SnapshotInfo[] {
  return jsonArray<Partial<RbdSnap>>(stdout, spec).map((entry) => {
    if (typeof entry.name !== "string" || typeof entry.size !== "number")
      throw unexpected(spec, JSON.stringify(entry));
    const isProtected = entry.protected === "true";
    const createdMs = parseCtime(entry.timestamp ?? "");
    return create(SnapshotInfoSchema, {
      ref: {
        dataset: { backend: StorageBackend.BACKEND_RBD, pool: dataset.pool, name: dataset.name },
        snapshotName: entry.name,
      },
      created: { seconds: BigInt(Math.floor(createdMs / 1000)), nanos: 0 },
      sizeBytes: BigInt(entry.size),
      held: isProtected,
      protected: isProtected,
      labels: snapshotLabels(entry.name),
    });
  });
}

/** Parses `rbd children --all --format json`. */
export function parseRbdChildren(stdout: string, spec: CommandSpec): DatasetRef[] {
  return jsonArray<Partial<RbdChild>>(stdout, spec).map((c) => {
    if (typeof c.pool !== "string" || typeof c.image !== "string")
      throw unexpected(spec, JSON.stringify(c));
    const name = c.pool_namespace ? `${c.pool_namespace}/${c.image}` : c.image;
    return create(DatasetRefSchema, { backend: StorageBackend.BACKEND_RBD, pool: c.pool, name });
  });
}

/** Parses `rbd info --format json`: the snapshot the image was cloned from, if any. */
export function parseRbdParent(stdout: string, spec: CommandSpec): SnapshotTarget | undefined {
  let info: RbdInfo;
  try {
    info = JSON.parse(stdout) as RbdInfo;
  } catch {
    throw unexpected(spec, stdout);
  }
  const p = info?.parent;
  if (p === undefined) return undefined;
  if (typeof p.pool !== "string" || typeof p.image !== "string" || typeof p.snapshot !== "string")
    throw unexpected(spec, stdout);
  const name = p.pool_namespace ? `${p.pool_namespace}/${p.image}` : p.image;
  return {
    dataset: create(DatasetRefSchema, { backend: StorageBackend.BACKEND_RBD, pool: p.pool, name }),
    name: p.snapshot,
  };
}

/** A ctime(3) string in UTC (`Sun Nov 22 14:05:02 2026`) as epoch ms; 0 when empty or unknown. */
export function parseCtime(text: string): number {
  const m = CTIME.exec(text);
  if (m === null) return 0;
  const [, mon, day, hh, mm, ss, year] = m;
  return Date.UTC(
    Number(year),
    MONTHS.indexOf(mon as string),
    Number(day),
    Number(hh),
    Number(mm),
    Number(ss),
  );
}
