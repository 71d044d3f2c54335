// Start-up repair of the trail's copy: a crash while a group of records was
// being written can leave it in one of the two files and not (or only in
// part, cut off as a torn line) in the other. Those records were never
// acknowledged (both files must hold one first), but the next records would
// chain after them in one file and break the other's chain for good, which
// is what a deletion looks like. The file behind gets them from the other.

import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import { type AuditRecord, chainHash } from "./audit-record.js";

/** How far back the file ahead is searched for where the one behind ends. */
const TAIL_BYTES = 16 * 1024 * 1024;

/**
 * Appends to `behind` (whose chain ends at `hash`) the records of `ahead`
 * that go on from there, each checked to continue the chain (with the HMAC
 * key, if any); stops at the first that does not. Returns how many.
 */
export function catchUpAuditFile(
  behind: string,
  hash: string,
  ahead: string,
  key: Buffer | undefined,
): number {
  if (hash === "") return 0; // no chain to go on from: nothing is taken over blindly
  const text = tailOf(ahead);
  const lines = text.split("\n").slice(0, -1); // whole lines only (the first may be cut: it never matches)
  let prev = hash;
  const taken: string[] = [];
  let started = false;
  for (const line of lines) {
    let r: AuditRecord;
    try {
      r = JSON.parse(line) as AuditRecord;
    } catch {
      if (started) break;
      continue;
    }
    if (!started && r.prev !== hash) continue;
    started = true;
    const { hash: h, ...unhashed } = r;
    if (r.prev !== prev || chainHash(unhashed, key) !== h) break;
    taken.push(`${line}\n`);
    prev = h;
  }
  if (taken.length === 0) return 0;
  const fd = openSync(behind, "a", 0o600);
  try {
    writeSync(fd, taken.join(""));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return taken.length;
}

/** The last TAIL_BYTES of `path`, as text. */
function tailOf(path: string): string {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, TAIL_BYTES));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    return buf.toString("utf8");
  } finally {
    closeSync(fd);
  }
}
