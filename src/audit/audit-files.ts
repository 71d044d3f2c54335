// The audit trail's open files: the main file and its optional copy on
// another disk, each written and fsynced with every group of records, and
// rotated together (at the same record, under the same time stamp) by size
// or age.

import { existsSync, renameSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { dirname } from "node:path";
import type { Clock, Logger } from "../core/index.js";
import { readAuditRecords } from "./audit-file-reader.js";
import { newestRotatedFile, rotationStamp } from "./rotated-audit-files.js";

/** What {@link openAuditFiles} needs. */
export interface AuditFilesOptions {
  readonly path: string;
  readonly copyPath: string | undefined;
  /** Durable bytes already in the main file (after recovery). */
  readonly size: number;
  readonly maxBytes: number;
  readonly maxAgeMs: number;
  readonly clock: Clock;
  readonly log: Logger;
  /** For tests: runs during a rotation, between renaming the files and opening the next ones. */
  readonly afterRename?: () => void;
}

/** The main audit file and its copy, as one. */
export interface AuditFiles {
  /**
   * Rotates both files at the same record once the main one is past
   * `maxBytes` or older than `maxAgeMs`. A rotation that fails is undone and
   * writing goes on in the current files (tried again ROTATION_RETRY_MS
   * later); one that can be neither finished nor undone rejects, and keeps
   * rejecting (no write may follow) until it can be finished.
   */
  rotateIfDue(): Promise<void>;
  /**
   * Writes `buf` to both files and fsyncs them; with `truncate`, first drops
   * whatever a failed write left past the durable size. Rejects with the
   * first failure once both writes have ended.
   */
  write(buf: Buffer, truncate: boolean): Promise<void>;
  /** Counts `bytes` more as durable in both files (after a successful write). */
  advance(bytes: number): void;
  close(): Promise<void>;
}

/** After a rotation that failed and was undone, the next one is tried this much later. */
export const ROTATION_RETRY_MS = 10_000;

/** One of the files: its handle and durable size, and where a rotation under way moved it. */
interface AuditFile {
  readonly path: string;
  handle: FileHandle;
  size: number;
  /** Set from renaming the file for a rotation until that rotation is finished or undone. */
  rotatedTo: string | undefined;
}

const writeAll = async (h: FileHandle, at: number, buf: Buffer, truncate: boolean) => {
  if (truncate) await h.truncate(at); // drop whatever a failed write left behind
  let off = 0;
  while (off < buf.length) off += (await h.write(buf, off, buf.length - off)).bytesWritten;
  await h.sync();
};

/** Flushes the directories holding `paths`: a file created or renamed there survives a power loss. */
const syncDirs = async (paths: readonly string[]) => {
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    const h = await open(dir, "r");
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }
};

const openFile = async (path: string, size?: number): Promise<AuditFile> => {
  const handle = await open(path, "a", 0o600);
  return { path, handle, size: size ?? (await handle.stat()).size, rotatedTo: undefined };
};

/** Opens (creating, 0600, appending) the main file and the copy. */
export async function openAuditFiles(options: AuditFilesOptions): Promise<AuditFiles> {
  const { clock, log, maxBytes, maxAgeMs } = options;
  const main = await openFile(options.path, options.size);
  // The copy rotates with the main file: the two stay pairs of files of the
  // same name holding the same records, to be compared file by file.
  const files = options.copyPath === undefined ? [main] : [main, await openFile(options.copyPath)];
  if (files.length === 2 && (await sameFile(main.handle, (files[1] as AuditFile).handle))) {
    await Promise.all(files.map((f) => f.handle.close()));
    // Each record would go in twice (the chain broken from the first) and no rotation could finish.
    throw new Error(`audit copy ${options.copyPath} is the audit file itself (${options.path})`);
  }
  // A file created just now: its entry is durable before a record in it is acknowledged.
  await syncDirs(files.map((f) => f.path));
  // A file's age counts from its first record, so a daemon restarted more often than maxAgeMs still rotates by age.
  let openedAt = Math.min(
    clock.now(),
    (await firstRecordAt(options.path)) ?? Number.POSITIVE_INFINITY,
  );
  let retryAt = 0;
  /** The time of the newest rotation's stamp: a clock stepped back stamps with it, so names keep their order. */
  let lastStampAt = newestRotatedFile(options.path)?.ms ?? 0;
  /** The time stamp of a rotation that could be neither finished nor undone. */
  let unfinished: string | undefined;

  // Rename first, with the files still open: nothing is closed before every
  // next file is open, so a failure at any step leaves the old files whole.
  const rotate = async (stamp: string) => {
    // Drop whatever a failed write left past the last durable record: a rotated file is never repaired.
    for (const f of files) {
      await f.handle.truncate(f.size);
      await f.handle.sync();
    }
    const left = files.filter((f) => f.rotatedTo === undefined);
    const suffix = freeSuffix(left.map((f) => `${f.path}.${stamp}`));
    for (const f of left) {
      const to = `${f.path}.${stamp}${suffix}`;
      renameSync(f.path, to);
      f.rotatedTo = to;
    }
    options.afterRename?.();
    const next: FileHandle[] = [];
    try {
      for (const f of files) next.push(await open(f.path, "a", 0o600));
      // The renames and the next files' entries are durable before a record in them is acknowledged.
      await syncDirs(files.map((f) => f.path));
    } catch (err) {
      await Promise.allSettled(next.map((h) => h.close()));
      throw err;
    }
    const old = files.map((f, i) => {
      const h = f.handle;
      f.handle = next[i] as FileHandle;
      f.size = 0;
      f.rotatedTo = undefined;
      return h;
    });
    openedAt = clock.now();
    await Promise.allSettled(old.map((h) => h.close())); // their records are fsynced already
  };

  // Moves renamed files back (over the empty next file, when one was created): true once none is left renamed.
  const undo = () => {
    for (const f of files) {
      if (f.rotatedTo === undefined) continue;
      try {
        renameSync(f.rotatedTo, f.path);
        f.rotatedTo = undefined;
      } catch (err) {
        log.error({ err, file: f.rotatedTo }, "audit rotation cannot be undone");
      }
    }
    return files.every((f) => f.rotatedTo === undefined);
  };

  const rotateIfDue = async () => {
    const now = clock.now();
    // A clock stepped back: ages and the retry delay count from now, not from a time yet to come.
    if (now < openedAt) openedAt = now;
    if (now < retryAt - ROTATION_RETRY_MS) retryAt = now;
    if (unfinished === undefined) {
      if (now < retryAt) return;
      if (main.size < maxBytes && now - openedAt < maxAgeMs) return;
      // Nothing written since the last rotation (writes failing): an empty rotated file would hide the chain's end.
      if (main.size === 0) return;
    }
    lastStampAt = Math.max(now, lastStampAt);
    const stamp = unfinished ?? rotationStamp(lastStampAt);
    try {
      await rotate(stamp);
      unfinished = undefined;
    } catch (err) {
      if (!undo()) {
        // Writing on would put records in a renamed file or one copy only: fail closed until finished.
        unfinished = stamp;
        throw err;
      }
      unfinished = undefined;
      retryAt = clock.now() + ROTATION_RETRY_MS;
      log.warn({ err }, "audit rotation failed; writing on in the current files");
    }
  };

  return {
    rotateIfDue,
    async write(buf, truncate) {
      // Wait for both writes to end either way, so a retry never overlaps a write still running.
      const results = await Promise.allSettled(
        files.map((f) => writeAll(f.handle, f.size, buf, truncate)),
      );
      const failed = results.find((r) => r.status === "rejected");
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    },
    advance(bytes) {
      for (const f of files) f.size += bytes;
    },
    async close() {
      await Promise.all(files.map((f) => f.handle.close()));
    },
  };
}

/** Whether two handles are of one file (the same path, a link, a directory reached twice). */
async function sameFile(a: FileHandle, b: FileHandle): Promise<boolean> {
  const [x, y] = await Promise.all([a.stat(), b.stat()]);
  return x.dev === y.dev && x.ino === y.ino;
}

/** When the first record of `path` was written; undefined when it holds none. */
async function firstRecordAt(path: string): Promise<number | undefined> {
  for await (const { record } of readAuditRecords(path, new AbortController().signal)) {
    const at = Date.parse(record.ts);
    return Number.isNaN(at) ? undefined : at;
  }
  return undefined;
}

/**
 * "", or `-0001`, `-0002`...: the first suffix with which none of `bases`
 * names an existing file. Two rotations in one millisecond (a burst of large
 * records, a clock stepped back) would otherwise rename the second file over
 * the first, losing its records; one suffix for both files keeps a rotated
 * file and its copy of the same name. The names still sort in the order
 * they were written (`audit.log.*` in a shell).
 */
function freeSuffix(bases: readonly string[]): string {
  let suffix = "";
  for (let n = 1; bases.some((b) => existsSync(`${b}${suffix}`)); n++)
    suffix = `-${String(n).padStart(4, "0")}`;
  return suffix;
}
