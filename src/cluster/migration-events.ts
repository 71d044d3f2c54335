import type { EventSink } from "./event-recorder.js";
import { jobActive, type MigrationJob } from "./migration-job.js";

/** Tells a migration's events as its job changes. */
export interface MigrationEvents {
  /** A job was written (or a final one settled): tells what changed since the last one. */
  changed(job: MigrationJob): void;
}

/**
 * Events of migrations this process writes: started, each new phase, and the
 * end (succeeded, failed or cancelled, with the job's message), on the
 * migration; a VM moved by a migration also gets a Moved event (a failover's
 * VM gets Restarted from failover.ts). Progress within a phase is not an
 * event: WatchMigration streams it.
 */
export function createMigrationEvents(sink: EventSink | undefined): MigrationEvents {
  /** The last state and phase told per migration in flight. */
  const last = new Map<string, string>();
  return {
    changed(job) {
      if (sink === undefined) return;
      const { id, status } = job;
      const now = `${status.state}:${status.phase}`;
      const before = last.get(id);
      if (before === now) return;
      const base = {
        kind: "migration" as const,
        id,
        tenant: job.tenant,
        source: "migration-engine",
      };
      if (jobActive(job)) {
        last.set(id, now);
        if (before === undefined && status.state === "running")
          sink.emit({
            ...base,
            type: "MigrationStarted",
            message: `${job.kind === "failover" ? "failover" : job.live ? "live migration" : "offline move"} of ${job.vmId} ${job.source} -> ${job.target}, requested by ${job.requestedBy}`,
          });
        else if (status.state === "running")
          sink.emit({
            ...base,
            type: "MigrationPhase",
            message: `phase ${status.phase}${job.message === "" ? "" : `: ${job.message}`}`,
          });
        return;
      }
      last.delete(id);
      finished(sink, base, job);
    },
  };
}

function finished(
  sink: EventSink,
  base: { kind: "migration"; id: string; tenant: string; source: string },
  job: MigrationJob,
): void {
  const ok = job.status.state === "succeeded";
  sink.emit({
    ...base,
    type: ok
      ? "MigrationSucceeded"
      : job.status.state === "cancelled"
        ? "MigrationCancelled"
        : "MigrationFailed",
    message: job.message,
    warning: !ok,
  });
  if (ok && job.kind !== "failover")
    sink.emit({
      kind: "vm",
      id: job.vmId,
      tenant: base.tenant,
      type: "Moved",
      message: `moved ${job.source} -> ${job.target} by migration ${base.id} (${job.message})`,
      source: "migration-engine",
    });
}
