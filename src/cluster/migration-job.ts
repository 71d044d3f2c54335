import type { MigrationProgress } from "../drivers/index.js";

/** Why a migration was made (the API's MigrationKind). */
export type MigrationJobKind = "unspecified" | "migrate" | "drain" | "failover";

/** Where a running migration is, as its source's hypervisor reports it. */
export type MigrationJobPhase = "preparing" | "transferring" | "switchover" | "completed";

/**
 * A migration's state with the phases it allows: a success has completed,
 * a cancel rolled back; a failure either rolled back, or moved the VM
 * (completed) without starting it, or is left where it was when nobody can
 * tell (both or neither node has the VM: an operator decides).
 */
export type MigrationJobStatus =
  | { readonly state: "pending"; readonly phase: "preparing" }
  | { readonly state: "running"; readonly phase: MigrationJobPhase }
  | { readonly state: "succeeded"; readonly phase: "completed" }
  | { readonly state: "failed"; readonly phase: MigrationJobPhase | "rolled-back" }
  | { readonly state: "cancelled"; readonly phase: "rolled-back" };

/** A finished migration's status. */
export type FinalStatus = Exclude<MigrationJobStatus, { state: "pending" | "running" }>;

/** How far the hypervisor's job got. */
export interface MigrationJobProgress {
  /** 0 to 100. */
  readonly percent: number;
  readonly bytesTransferred: bigint;
  readonly bytesTotal: bigint;
  readonly downtimeEstimateMs: number;
}

/**
 * One migration or failover as the cluster layer thinks of it: plain,
 * immutable data. Each change makes a new job (the functions below); the
 * journal turns it into the store's record and the API's `Migration` only
 * where it is written or published.
 */
export interface MigrationJob {
  readonly id: string;
  readonly vmId: string;
  /** The VM's tenant (who may see the migration). */
  readonly tenant: string;
  readonly source: string;
  readonly target: string;
  readonly kind: MigrationJobKind;
  readonly live: boolean;
  readonly allowDowntime: boolean;
  readonly requestedBy: string;
  /** The control-plane process that runs (or settled) it. */
  readonly runner: string;
  /** Capacity held on the target while it is in flight. */
  readonly reserved: { readonly vcpus: number; readonly memoryBytes: bigint };
  /** An offline move of a running VM: it must run again wherever it ends up. */
  readonly restartAfter: boolean;
  /**
   * What of its end the audit trail has not been told yet
   * (migration-settle-tell.ts): its settle by reconciliation, or the
   * failover controller's restart it is.
   */
  readonly untold?: "settled" | "failover";
  readonly status: MigrationJobStatus;
  readonly progress: MigrationJobProgress;
  readonly message: string;
  readonly createdMs: number;
  readonly updatedMs: number;
  /** Set when it finished (0 while in flight). */
  readonly finishedMs: number;
}

/** No transfer yet. */
export const NO_PROGRESS: MigrationJobProgress = Object.freeze({
  percent: 0,
  bytesTransferred: 0n,
  bytesTotal: 0n,
  downtimeEstimateMs: 0,
});

/** True while a migration has not reached a final state. */
export function jobActive(job: MigrationJob): boolean {
  return job.status.state === "pending" || job.status.state === "running";
}

/** The job running, in the phase it was in; `message` replaces the last one when given. */
export function jobRunning(job: MigrationJob, message?: string): MigrationJob {
  const phase = job.status.state === "running" ? job.status.phase : "preparing";
  return { ...job, status: { state: "running", phase }, message: message ?? job.message };
}

/** The job after a progress report of the hypervisor: its phase and transfer (message cleared). */
export function jobAdvanced(job: MigrationJob, p: MigrationProgress): MigrationJob {
  return {
    ...job,
    status: { state: "running", phase: p.phase },
    progress: {
      percent: Math.max(0, Math.min(100, Math.round(p.percent))),
      bytesTransferred: p.bytesTransferred,
      bytesTotal: p.bytesTotal,
      downtimeEstimateMs: p.downtimeEstimateMs ?? 0,
    },
    message: "",
  };
}

/** The job finished with `status`; a success reports 100 %. */
export function jobFinished(job: MigrationJob, status: FinalStatus, message: string): MigrationJob {
  const progress = status.state === "succeeded" ? { ...job.progress, percent: 100 } : job.progress;
  return { ...job, status, progress, message };
}

/**
 * A failure that leaves the phase as it was: nobody can tell where the VM
 * is, an operator decides.
 */
export function jobUnresolved(job: MigrationJob, message: string): MigrationJob {
  const phase = job.status.state === "pending" ? "preparing" : job.status.phase;
  return jobFinished(job, { state: "failed", phase }, message);
}
