// The audit trail's open files: the main file and its optional copy on
// another disk, each written and fsynced with every group of records, and
// rotated together by size or age.

import { existsSync, renameSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import type { Clock, Logger } from "../core/index.js";

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
}

/** The main audit file and its copy, as one. */
export interface AuditFiles {
  /** Rotates both files once the main one is past `maxBytes` or older than `maxAgeMs`. */
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

const writeAll = async (h: FileHandle, at: number, buf: Buffer, truncate: boolean) => {
  if (truncate) await h.truncate(at); // drop whatever a failed write left behind
  let off = 0;
  while (off < buf.length) off += (await h.write(buf, off, buf.length - off)).bytesWritten;
  await h.sync();
};

/** Opens (creating, 0600, appending) the main file and the copy. */
export async function openAuditFiles(options: AuditFilesOptions): Promise<AuditFiles> {
  const { clock, log, maxBytes, maxAgeMs } = options;
  let handle: FileHandle = await open(options.path, "a", 0o600);
  let copy: FileHandle | undefined =
    options.copyPath === undefined ? undefined : await open(options.copyPath, "a", 0o600);
  let copySize = copy === undefined ? 0 : (await copy.stat()).size;
  let size = options.size;
  let openedAt = clock.now();

  const rotateIfDue = async () => {
    if (size < maxBytes && clock.now() - openedAt < maxAgeMs) return;
    const stamp = new Date(clock.now()).toISOString().replace(/[:.]/g, "-");
    // Rename first, with the file still open: if the rename fails, nothing is
    // closed and writing goes on in the current file (rotation is retried later).
    try {
      renameSync(options.path, freeName(`${options.path}.${stamp}`));
    } catch (err) {
      log.warn({ err }, "audit rotation failed; writing on in the current file");
      openedAt = clock.now();
      return;
    }
    const next = await open(options.path, "a", 0o600);
    await handle.close();
    handle = next;
    size = 0;
    if (copy !== undefined && options.copyPath !== undefined) {
      try {
        renameSync(options.copyPath, freeName(`${options.copyPath}.${stamp}`));
        const nextCopy = await open(options.copyPath, "a", 0o600);
        await copy.close();
        copy = nextCopy;
        copySize = 0;
      } catch (err) {
        log.warn({ err }, "audit copy rotation failed; writing on in the current copy");
      }
    }
    openedAt = clock.now();
  };

  return {
    rotateIfDue,
    async write(buf, truncate) {
      // Wait for both writes to end either way, so a retry never overlaps a write still running.
      const results = await Promise.allSettled([
        writeAll(handle, size, buf, truncate),
        ...(copy === undefined ? [] : [writeAll(copy, copySize, buf, truncate)]),
      ]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    },
    advance(bytes) {
      size += bytes;
      copySize += copy === undefined ? 0 : bytes;
    },
    async close() {
      await handle.close();
      await copy?.close();
    },
  };
}

/**
 * `base`, or `base-0001`, `base-0002`... when a file of that name exists: two
 * rotations in one millisecond (a burst of large records) would otherwise
 * rename the second file over the first, losing its records. The names
 * still sort in the order they were written (`audit.log.*` in a shell).
 */
function freeName(base: string): string {
  let name = base;
  for (let n = 1; existsSync(name); n++) name = `${base}-${String(n).padStart(4, "0")}`;
  return name;
}
