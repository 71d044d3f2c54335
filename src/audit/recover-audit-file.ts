// Start-up repair of an audit file: where its chain ends (in the newest
// rotated file when the file holds no record yet), and a torn tail (a last
// line cut off by a crash mid-write, or a last group a power loss tore in its
// middle, with the records after the tear) moved aside so the file always
// verifies.

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
  /** Lines in the torn tail (more than one: a group torn in its middle, its later records with it). */
  tornLines?: number;
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
    const { tail, end, last, tornLines } = intactEnd(fd, size);
    const good = size - tail.length + end;
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
    const torn = { size: good, tornFile, tornBytes: size - good, tornLines };
    return { seq: last?.seq ?? 0, hash: last?.hash ?? "", ...torn };
  } finally {
    closeSync(fd);
  }
}

/**
 * Where the intact chain at the end of a file ends: `tail` (the file's last
 * bytes) holds it up to `end`, where its last record `last` (undefined: none)
 * ends; what follows is torn, `tornLines` lines of it whole.
 *
 * Everything from the first line in the tail that is no record, or does not
 * chain (its prev is not the hash of the record before), on is torn: a power
 * loss before a group's fsync ended can bring back zeros (ext4
 * data=writeback) or stale data in any page of the group, its middle as well
 * as its end, while later pages made it. No record of that group was
 * acknowledged (the fsync would have made all of them durable), so none is
 * lost by moving them aside, and the chain goes on from the record before.
 *
 * Bound: only the last group can be unsynced (groups are written one at a
 * time, each fsynced before the next; a failed write's bytes are cut off
 * before the next), and it is the file's last bytes. The tail read is
 * TAIL_BYTES (1 MiB, about 2,000 records of ~500 bytes; the heaviest load
 * measured queued 27 a group), so it holds the whole unsynced group with the
 * durable record before it; it is doubled only while its first whole line
 * is no record to chain from (a run of zeros longer than it). A start reads
 * about 1 MiB, not the file. A line broken further back was acknowledged
 * and durable, so not by the crash: it is left for `hvctl audit verify` to
 * name. (One broken otherwise within the tail, by bit rot or an edit, is
 * moved aside too, and named in the recovery record: no more than cutting
 * records off the end already hides, and the copy brings them back.)
 */
function intactEnd(
  fd: number,
  size: number,
): { tail: Buffer; end: number; last?: ChainEnd; tornLines: number } {
  for (let tailLen = Math.min(size, TAIL_BYTES); ; tailLen = Math.min(size, tailLen * 2)) {
    // One byte more before the tail: whether its first line starts right at it.
    const from = size - tailLen;
    const read = Buffer.alloc(tailLen + (from > 0 ? 1 : 0));
    readSync(fd, read, 0, read.length, from - (read.length - tailLen));
    const tail = read.subarray(read.length - tailLen);
    // The first line of a partial tail may start before it: the scan starts at the next one.
    let end = from === 0 ? 0 : read.indexOf(0x0a);
    let last: ChainEnd | undefined;
    let nl = end === -1 ? -1 : tail.indexOf(0x0a, end);
    for (; nl !== -1; nl = tail.indexOf(0x0a, end)) {
      const r = chainEnd(tail.toString("utf8", end, nl));
      if (r === undefined || (last !== undefined && r.prev !== last.hash)) break;
      last = r;
      end = nl + 1;
    }
    if (last !== undefined || tailLen === size) {
      // The torn lines, for the recovery record (the last one may be cut off).
      let tornLines = 0;
      for (let at = end; at < tail.length; tornLines++) {
        const next = tail.indexOf(0x0a, at);
        at = next === -1 ? tail.length : next + 1;
      }
      return { tail, end, last, tornLines };
    }
  }
}

/** A line's seq, hash and prev; undefined when it is no record. */
interface ChainEnd {
  readonly seq: number;
  readonly hash: string;
  readonly prev: string;
}

function chainEnd(line: string): ChainEnd | undefined {
  try {
    const r = JSON.parse(line) as Partial<ChainEnd> | null;
    if (typeof r?.seq === "number" && typeof r.hash === "string" && typeof r.prev === "string")
      return { seq: r.seq, hash: r.hash, prev: r.prev };
  } catch {}
  return undefined;
}
