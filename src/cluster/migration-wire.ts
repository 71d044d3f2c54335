import { create } from "@bufbuild/protobuf";
import { msFromTimestamp, timestampFromMs } from "../core/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  Untold,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Migration,
  MigrationKind,
  MigrationPhase,
  MigrationSchema,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import type {
  MigrationJob,
  MigrationJobKind,
  MigrationJobPhase,
  MigrationJobStatus,
} from "./migration-job.js";

/**
 * The two places a {@link MigrationJob} leaves the domain: the store's
 * `MigrationRecord` (written by the journal) and the API's `Migration`
 * (published to callers and watchers). Nothing else builds these messages.
 */

const KINDS: Record<MigrationJobKind, MigrationKind> = {
  unspecified: MigrationKind.UNSPECIFIED,
  migrate: MigrationKind.MIGRATE,
  drain: MigrationKind.DRAIN,
  failover: MigrationKind.FAILOVER,
};
const PHASES: Record<MigrationJobPhase | "rolled-back", MigrationPhase> = {
  preparing: MigrationPhase.PREPARING,
  transferring: MigrationPhase.TRANSFERRING,
  switchover: MigrationPhase.SWITCHOVER,
  completed: MigrationPhase.COMPLETED,
  "rolled-back": MigrationPhase.ROLLED_BACK,
};
const STATES: Record<MigrationJobStatus["state"], MigrationState> = {
  pending: MigrationState.PENDING,
  running: MigrationState.RUNNING,
  succeeded: MigrationState.SUCCEEDED,
  failed: MigrationState.FAILED,
  cancelled: MigrationState.CANCELLED,
};

/** The domain's name of an API MigrationKind. */
export function jobKindOf(kind: MigrationKind): MigrationJobKind {
  return keyOf(KINDS, kind) ?? "unspecified";
}

/** The job as the API shows it. */
export function migrationOf(job: MigrationJob): Migration {
  return create(MigrationSchema, {
    migrationId: job.id,
    vm: { vmId: job.vmId },
    source: { nodeId: { id: job.source } },
    target: { nodeId: { id: job.target } },
    state: STATES[job.status.state],
    phase: PHASES[job.status.phase],
    live: job.live,
    allowDowntime: job.allowDowntime,
    kind: KINDS[job.kind],
    requestedBy: job.requestedBy,
    progressPct: job.progress.percent,
    bytesTransferred: job.progress.bytesTransferred,
    bytesTotal: job.progress.bytesTotal,
    downtimeEstimateMs: job.progress.downtimeEstimateMs,
    message: job.message,
    created: timestampFromMs(job.createdMs),
    updated: timestampFromMs(job.updatedMs),
    finished: job.finishedMs === 0 ? undefined : timestampFromMs(job.finishedMs),
  });
}

/** The job as the store keeps it (`migrations/<id>`). */
export function recordOf(job: MigrationJob): MigrationRecord {
  return create(MigrationRecordSchema, {
    migration: migrationOf(job),
    runner: job.runner,
    vcpusReserved: job.reserved.vcpus,
    memoryReserved: job.reserved.memoryBytes,
    tenant: job.tenant,
    restartAfter: job.restartAfter,
    untold: job.untold === undefined ? Untold.UNSPECIFIED : UNTOLD[job.untold],
  });
}

/** The job a stored record holds, or undefined for a record without a migration. */
export function jobOf(record: MigrationRecord): MigrationJob | undefined {
  const m = record.migration;
  if (m === undefined) return undefined;
  return {
    id: m.migrationId,
    vmId: m.vm?.vmId ?? "",
    tenant: record.tenant,
    source: m.source?.nodeId?.id ?? "",
    target: m.target?.nodeId?.id ?? "",
    kind: jobKindOf(m.kind),
    live: m.live,
    allowDowntime: m.allowDowntime,
    requestedBy: m.requestedBy,
    runner: record.runner,
    reserved: { vcpus: record.vcpusReserved, memoryBytes: record.memoryReserved },
    restartAfter: record.restartAfter,
    ...untoldOf(record.untold),
    status: statusOf(m.state, m.phase),
    progress: {
      percent: m.progressPct,
      bytesTransferred: m.bytesTransferred,
      bytesTotal: m.bytesTotal,
      downtimeEstimateMs: m.downtimeEstimateMs,
    },
    message: m.message,
    createdMs: msFromTimestamp(m.created),
    updatedMs: msFromTimestamp(m.updated),
    finishedMs: msFromTimestamp(m.finished),
  };
}

/** A stored state and phase as a status; combinations the engine never writes read as the nearest one. */
function statusOf(state: MigrationState, phase: MigrationPhase): MigrationJobStatus {
  const p = keyOf(PHASES, phase) ?? "preparing";
  const moving = p === "rolled-back" ? "preparing" : p;
  switch (state) {
    case MigrationState.PENDING:
      return { state: "pending", phase: "preparing" };
    case MigrationState.RUNNING:
      return { state: "running", phase: moving };
    case MigrationState.SUCCEEDED:
      return { state: "succeeded", phase: "completed" };
    case MigrationState.CANCELLED:
      return { state: "cancelled", phase: "rolled-back" };
    default:
      return { state: "failed", phase: p };
  }
}

function keyOf<K extends string, V>(table: Record<K, V>, value: V): K | undefined {
  return (Object.keys(table) as K[]).find((k) => table[k] === value);
}

/** A job's untold end as the record's. */
const UNTOLD = { settled: Untold.SETTLED, failover: Untold.FAILOVER } as const;

/** A record's untold end as a job's (absent when told). */
function untoldOf(untold: Untold): Pick<MigrationJob, "untold"> {
  const found = keyOf(UNTOLD, untold);
  return found === undefined ? {} : { untold: found };
}
