// Start-up repair of an audit file: where its chain ends (in the newest
// rotated file when the file holds no record yet), and a torn last line (left
// by a crash mid-write) moved aside so the file always verifies.

import {
  closeSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename } from "node:path";
import type { Clock } from "../core/index.js";
import { newestRotatedFile } from "./rotated-audit-files.js";

/** What names a torn tail moved aside (`<path>.torn-<time>`): no part of the chain. */
const TORN_TAIL = ".torn-";

/** How much of a file's end is read first for its last record. */
const TAIL_BYTES = 1024 * 1024;

/**
 * Whether `path` is a torn tail a restart moved aside: it matches the
 * rotated files' `audit.log.*` in a shell, but is no part of the chain.
 */
export function isTornTail(path: string): boolean {
  return /\.torn-\d{4}-[^/]*$/.test(path);
}

/** The end of an audit file's chain after {@link recoverAuditFile}. */
export interface RecoveredAuditFile {
  /** The last record's seq (0: no record). */
  seq: number;
  /** The last record's hash ("": no record). */
  hash: string;
  /** Bytes left in the file: up to the end of its last good line. */
  size: number;
  /** Where the torn tail was moved, when there was one. */
  tornFile?: string;
  tornBytes?: number;
}

/**
 * Reads the end of an existing file: the last record's seq and hash, and a
 * torn tail (moved aside). When the file holds no record, the chain goes on
 * from the newest rotated file: a crash or a full disk between a rotation
 * and its first record leaves the next file missing or empty, and a chain
 * started afresh there would not verify after the rotated files.
 */
export function recoverAuditFile(path: string, clock: Clock): RecoveredAuditFile {
  const recovered = recoverOne(path, clock, true);
  const rotated = recovered.hash === "" ? newestRotatedFile(path) : undefined;
  if (rotated === undefined) return recovered;
  const { seq, hash } = recoverOne(rotated.path, clock, false);
  return { ...recovered, seq, hash };
}

/**
 * Undoes a rotation that a crash cut short between the main file and its
 * copy (one renamed, the other not): when `a` is missing or empty and its
 * newest rotated file ends at the record `b` ends at, `b` never renamed
 * under that stamp, the rotated file is moved back, so the two rotate again
 * together and their files stay pairs. True when it did.
 */
export function undoHalfRotation(a: string, b: string, clock: Clock): boolean {
  if ((statSync(a, { throwIfNoEntry: false })?.size ?? 0) > 0) return false;
  const rotated = newestRotatedFile(a);
  if (rotated === undefined) return false;
  if (
    statSync(`${b}${basename(rotated.path).slice(basename(a).length)}`, { throwIfNoEntry: false })
  )
    return false;
  const end = recoverOne(rotated.path, clock, false).hash;
  if (end === "" || recoverOne(b, clock, false).hash !== end) return false;
  renameSync(rotated.path, a);
  return true;
}

/**
 * recoverAuditFile for one file; without `repair`, only reads it (a rotated
 * file is left as it is). Only a missing file holds no record: one that
 * cannot be read throws (a new chain must not start in it).
 */
function recoverOne(path: string, clock: Clock, repair: boolean): RecoveredAuditFile {
  let fd: number;
  try {
    // Read-only: a file made append-only (chattr +a) cannot be opened for writing but is appended to.
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { seq: 0, hash: "", size: 0 };
    throw err;
  }
  try {
    const size = fstatSync(fd).size;
    // The tail read, doubled until it holds the last record (a power loss can
    // leave more than a MiB of zeros), or the whole file.
    let tail = Buffer.alloc(0);
    let end = 0; // bytes of tail up to the end of the last record's line
    let lastLine: string | undefined;
    for (let tailLen = Math.min(size, TAIL_BYTES); lastLine === undefined; ) {
      tail = Buffer.alloc(tailLen);
      readSync(fd, tail, 0, tailLen, size - tailLen);
      end = tail.lastIndexOf(0x0a) + 1;
      // Walk back over complete but unparseable lines too: they are torn all the same.
      while (end > 0) {
        const start = tail.lastIndexOf(0x0a, end - 2) + 1;
        // The first line of a partial tail may start before it: read further back.
        if (start === 0 && tailLen < size) break;
        const line = tail.subarray(start, end - 1).toString();
        try {
          const r = JSON.parse(line) as { seq?: unknown; hash?: unknown };
          if (typeof r.seq === "number" && typeof r.hash === "string") {
            lastLine = line;
            break;
          }
        } catch {}
        end = start;
      }
      if (tailLen === size) break;
      tailLen = Math.min(size, tailLen * 2);
    }
    const tailLen = tail.length;
    const good = size - tailLen + end;
    let tornFile: string | undefined;
    if (repair && good < size) {
      tornFile = `${path}${TORN_TAIL}${new Date(clock.now()).toISOString().replace(/[:.]/g, "-")}`;
      writeFileSync(tornFile, tail.subarray(end), { mode: 0o600 });
      const w = openSync(path, "r+");
      try {
        ftruncateSync(w, good);
        fsyncSync(w);
      } finally {
        closeSync(w);
      }
    }
    if (lastLine === undefined)
      return { seq: 0, hash: "", size: good, tornFile, tornBytes: size - good };
    const r = JSON.parse(lastLine) as { seq: number; hash: string };
    return { seq: r.seq, hash: r.hash, size: good, tornFile, tornBytes: size - good };
  } finally {
    closeSync(fd);
  }
}
