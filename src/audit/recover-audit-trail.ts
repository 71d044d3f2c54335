import type { Clock, Logger } from "../core/index.js";
import { catchUpAuditFile } from "./audit-copy-catch-up.js";
import {
  type RecoveredAuditFile,
  recoverAuditFile,
  undoHalfRotation,
} from "./recover-audit-file.js";

/**
 * Start-up repair of the trail and its copy, before anything is written: a
 * rotation a crash cut short between the two is undone, a torn tail in
 * either (a torn last line, or a last group torn in its middle with the
 * records after the tear) is moved aside, and a file a crash left behind the other takes
 * over the records that continue its chain. Answers where the main file's
 * chain ends and what was repaired, for the recovery record.
 */
export function recoverAuditTrail(
  options: { readonly path: string; readonly copyPath?: string; readonly hmacKey?: Buffer },
  clock: Clock,
  log: Logger,
): { recovered: RecoveredAuditFile; repairs: string[] } {
  if (options.copyPath !== undefined)
    for (const [a, b] of [
      [options.path, options.copyPath],
      [options.copyPath, options.path],
    ] as const)
      if (undoHalfRotation(a, b, clock))
        log.warn({ file: a }, "audit trail: undid a rotation a crash cut short");
  let recovered = recoverAuditFile(options.path, clock);
  /** What the start repaired, for the recovery record. */
  const repairs: string[] = [];
  tornRepair(recovered, repairs);
  if (options.copyPath !== undefined) {
    // The copy is repaired the same way, first: a torn tail there must not glue onto
    // new records, and the records behind a torn line are never taken over as good.
    const copy = recoverAuditFile(options.copyPath, clock);
    tornRepair(copy, repairs);
    // (A copy without a record is new: it starts at the next record.)
    if (copy.hash !== recovered.hash && copy.hash !== "") {
      // A crash mid-write left the last records in one file only: the other takes them over.
      const [behind, end, ahead] =
        copy.seq < recovered.seq
          ? [options.copyPath, copy.hash, options.path]
          : [options.path, recovered.hash, options.copyPath];
      const n = catchUpAuditFile(behind, end, ahead, options.hmacKey);
      if (n > 0)
        repairs.push(`${n} record(s) at the end of ${ahead} missing from ${behind}: copied over`);
      if (behind === options.path) recovered = recoverAuditFile(options.path, clock);
      if (recoverAuditFile(options.copyPath, clock).hash !== recovered.hash) {
        // Another chain (a copy of another trail, one edited, or not caught up): the
        // next records break the copy's chain, so the chain itself says why.
        log.error(
          { copyPath: options.copyPath },
          "audit trail and its copy end at different records",
        );
        repairs.push(
          `${options.copyPath} ends at another record than ${options.path}: its chain breaks here`,
        );
      }
    }
  }
  return { recovered, repairs };
}

/** What the repair of one file's torn tail says in the recovery record (nothing: none). */
function tornRepair(file: RecoveredAuditFile, repairs: string[]): void {
  if (file.tornFile === undefined) return;
  repairs.push(
    (file.tornLines ?? 0) > 1
      ? `torn last group: ${file.tornLines} line(s) (${file.tornBytes} bytes) after record ${file.seq} moved to ${file.tornFile}`
      : `torn last line (${file.tornBytes} bytes) moved to ${file.tornFile}`,
  );
}
