import { readFileSync } from "node:fs";
import { type AuditRecord, chainHash } from "./audit-record.js";

/** Outcome of verifying a chain of audit files. */
export interface VerifyResult {
  readonly ok: boolean;
  readonly files: number;
  readonly records: number;
  /** The first problem found, if any. */
  readonly problem?: { readonly file: string; readonly line: number; readonly what: string };
}

/**
 * Verifies audit files given oldest first: every line parses, every hash
 * matches its record (with the HMAC key if one is used), every record links
 * to the one before and sequence numbers go up by one. Reports the first
 * broken, missing or reordered record. What it cannot see: records deleted
 * from the end leave a shorter chain that still verifies; forward records
 * to syslog or a second disk for that.
 */
export function verifyAuditFiles(paths: readonly string[], key?: Buffer): VerifyResult {
  let prevHash: string | undefined;
  let prevSeq: number | undefined;
  let records = 0;
  for (const file of paths) {
    const lines = readFileSync(file, "utf8").split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    for (const [i, text] of lines.entries()) {
      const fail = (what: string): VerifyResult => ({
        ok: false,
        files: paths.length,
        records,
        problem: { file, line: i + 1, what },
      });
      let r: AuditRecord;
      try {
        r = JSON.parse(text) as AuditRecord;
      } catch {
        return fail("not a JSON record (torn or edited)");
      }
      if (typeof r.hash !== "string" || typeof r.seq !== "number")
        return fail("not an audit record");
      const { hash, ...unhashed } = r;
      if (chainHash(unhashed, key) !== hash)
        return fail(`record ${r.seq} was edited (hash mismatch)`);
      if (prevHash !== undefined) {
        if (r.prev !== prevHash) {
          const expected = (prevSeq ?? 0) + 1;
          // The expected record further on means reordering; nowhere means deletion.
          const later = lines
            .slice(i + 1, i + 1001)
            .findIndex((l) => l.includes(`"seq":${expected},`));
          if (r.seq <= (prevSeq ?? 0) || later >= 0) {
            return fail(
              `record ${r.seq} is out of order (record ${expected} ${later >= 0 ? `comes later, at line ${i + 2 + later}` : "should come first"})`,
            );
          }
          return fail(`record(s) before ${r.seq} are missing (chain broken)`);
        }
        if (r.seq !== (prevSeq ?? 0) + 1) return fail(`sequence jumps from ${prevSeq} to ${r.seq}`);
      }
      prevHash = hash;
      prevSeq = r.seq;
      records++;
    }
  }
  return { ok: true, files: paths.length, records };
}
