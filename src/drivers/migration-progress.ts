/**
 * Turns what a migration shows of itself (virsh's percentages, domjobinfo's
 * figures) into the control plane's progress reports. The percentage never
 * goes backwards: virsh's figure can drop when a later pass finds more dirty
 * memory, which would only confuse a progress bar.
 */
import type { MigrationPhase, MigrationProgress } from "./hypervisor-driver.js";
import type { JobInfo } from "./virsh-parse.js";

/** Feeds reports to one listener. */
export interface ProgressReporter {
  /** Takes the latest job figures for the reports that follow. */
  job(info: JobInfo): void;
  /** Reports `phase` at `percent`; `final` reports even after close (the completion). */
  report(phase: MigrationPhase, percent: number, final?: boolean): void;
  /** Stops reporting (late lines and job figures are dropped). */
  close(): void;
}

/** Turns percentages and job figures into reports that never go backwards. */
export function createProgressReporter(
  onProgress: ((p: MigrationProgress) => void) | undefined,
): ProgressReporter {
  let percent = 0;
  let job: JobInfo | undefined;
  let closed = false;
  return {
    job(info: JobInfo) {
      if (!closed) job = info;
    },
    report(phase: MigrationPhase, value: number, final = false) {
      if (onProgress === undefined || (closed && !final)) return;
      percent = Math.max(percent, value);
      const total = job?.dataTotalBytes ?? 0n;
      const p: {
        phase: MigrationPhase;
        percent: number;
        bytesTransferred: bigint;
        bytesTotal: bigint;
        downtimeEstimateMs?: number;
      } = {
        phase,
        percent,
        bytesTransferred: final ? total : (job?.dataProcessedBytes ?? 0n),
        bytesTotal: total,
      };
      if (job?.expectedDowntimeMs !== undefined) p.downtimeEstimateMs = job.expectedDowntimeMs;
      try {
        onProgress(p);
      } catch {
        // A failing listener must not fail the migration.
      }
    },
    close() {
      closed = true;
    },
  };
}
