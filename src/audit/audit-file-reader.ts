import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import type { AuditRecord } from "./audit-record.js";

/**
 * Reading an audit file's records, forward from a byte offset or backward
 * from its end. Only lines ended by a newline are records: a line still
 * being written (or torn by a crash, repaired at the next start) is
 * skipped, as is a line that does not parse.
 */

/** Bytes read at a time. */
const CHUNK_BYTES = 64 * 1024;

/** A record and the byte offset its line starts at. */
export interface PlacedRecord {
  readonly record: AuditRecord;
  readonly at: number;
}

function parse(line: string): AuditRecord | undefined {
  if (line === "") return undefined;
  try {
    const r = JSON.parse(line) as AuditRecord;
    return typeof r === "object" && r !== null && typeof r.seq === "number" ? r : undefined;
  } catch {
    return undefined;
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

/** The records of `path` from byte `start` on (a line start), oldest first; nothing when there is no file. */
export async function* readAuditRecords(
  path: string,
  signal: AbortSignal,
  start = 0,
): AsyncIterable<PlacedRecord> {
  const input = createReadStream(path, { start, highWaterMark: CHUNK_BYTES });
  let carry: Buffer = Buffer.alloc(0);
  /** The file offset of carry's first byte. */
  let at = start;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      if (signal.aborted) return;
      const data = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
      let from = 0;
      for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a, from)) {
        const record = parse(data.toString("utf8", from, nl));
        if (record !== undefined) yield { record, at: at + from };
        from = nl + 1;
      }
      carry = data.subarray(from);
      at += from;
    }
  } catch (err) {
    if (!isMissing(err)) throw err;
  } finally {
    input.destroy();
  }
}

/** The records of `path`, newest first; nothing when there is no file. */
export async function* readAuditRecordsBackward(
  path: string,
  signal: AbortSignal,
): AsyncIterable<AuditRecord> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  try {
    let end = (await handle.stat()).size;
    /** Bytes from `end` on not yet given out; after the first read, it ends with a newline. */
    let data: Buffer = Buffer.alloc(0);
    let trimmed = false;
    while (end > 0 || data.length > 0) {
      if (signal.aborted) return;
      if (end > 0) {
        const len = Math.min(CHUNK_BYTES, end);
        const chunk = Buffer.alloc(len);
        const { bytesRead } = await handle.read(chunk, 0, len, end - len);
        if (bytesRead !== len) return; // the file shrank under us (rotated): stop here
        end -= len;
        data = data.length === 0 ? chunk : Buffer.concat([chunk, data]);
      }
      if (!trimmed) {
        // What follows the last newline is a line still being written: not a record.
        const nl = data.lastIndexOf(0x0a);
        if (nl === -1) {
          if (end > 0) continue;
          return;
        }
        data = data.subarray(0, nl + 1);
        trimmed = true;
      }
      // Give out every whole line in `data`; the first may go on before it, unless the file starts there.
      while (data.length > 0) {
        const before = data.length >= 2 ? data.lastIndexOf(0x0a, data.length - 2) : -1;
        if (before === -1 && end > 0) break;
        const record = parse(data.toString("utf8", before + 1, data.length - 1));
        data = data.subarray(0, before + 1);
        if (record !== undefined) yield record;
        if (signal.aborted) return;
      }
      if (end === 0) return;
    }
  } finally {
    await handle.close();
  }
}
