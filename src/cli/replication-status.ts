/*
 * How a replication job and its status read to people: the state names and
 * colours, the job table's columns, `replication status`'s fields, and the
 * progress and summary lines of `replication run|watch`.
 */
import { msFromTimestamp } from "../core/index.js";
import {
  type ReplicationJob,
  ReplicationState,
  type ReplicationStatus,
} from "../gen/debvisor/v1/storage_pb.js";
import { reasonAdvice } from "./cli-errors.js";
import { datasetText } from "./dataset-args.js";
import {
  type Column,
  formatBytes,
  renderFields,
  type Style,
  shortAge,
  tableTime,
} from "./output.js";
import { formatEta, type ProgressUpdate } from "./progress.js";

const STATE_NAMES: Record<ReplicationState, string> = {
  [ReplicationState.REPL_STATE_UNKNOWN]: "Unknown",
  [ReplicationState.REPL_STATE_PENDING]: "Pending",
  [ReplicationState.REPL_STATE_RUNNING]: "Running",
  [ReplicationState.REPL_STATE_SUCCESS]: "Succeeded",
  [ReplicationState.REPL_STATE_FAILED]: "Failed",
};

/** Pending, Running, Succeeded, Failed, coloured for people on a terminal. */
export function replicationState(state: ReplicationState, style: Style): string {
  const text = STATE_NAMES[state] ?? "Unknown";
  if (state === ReplicationState.REPL_STATE_SUCCESS) return style.good(text);
  if (state === ReplicationState.REPL_STATE_FAILED) return style.bad(text);
  if (state === ReplicationState.REPL_STATE_RUNNING) return style.warn(text);
  return text;
}

type Time = { seconds: bigint; nanos: number } | undefined;
type Field = readonly [string, string];
const msOf = (t: Time) => (t === undefined ? undefined : msFromTimestamp(t));
/** `3m ago`, or `never`. */
const ago = (t: Time, now: number) => {
  const ms = msOf(t);
  return ms === undefined ? "never" : `${shortAge(now - ms)} ago`;
};
/** `in 12m`, `due`, or `-`. */
export const until = (t: Time, now: number) => {
  const ms = msOf(t);
  if (ms === undefined) return "-";
  return ms <= now ? "due" : `in ${shortAge(ms - now)}`;
};
/** `full` or `incremental from BASE`. */
const kindOf = (s: ReplicationStatus) =>
  s.incremental ? `incremental from ${s.baseSnapshotName || "?"}` : "full";
const errorOf = (s: ReplicationStatus) =>
  s.lastError === "" ? "-" : `${s.lastError}${s.lastErrorReason ? ` (${s.lastErrorReason})` : ""}`;

/** The columns of the job table (`replication list`), ages as of `now`. */
export function jobColumns(style: Style, now: number): Column<ReplicationJob>[] {
  const st = (j: ReplicationJob) => j.status;
  return [
    { header: "ID", value: (j) => j.jobId },
    { header: "DATASET", value: (j) => datasetText(j.plan?.dataset) },
    { header: "SOURCE", value: (j) => j.plan?.source?.nodeId?.id || "-" },
    { header: "TARGET", value: (j) => j.plan?.target?.nodeId?.id || "-" },
    {
      header: "STATE",
      value: (j) => replicationState(st(j)?.state ?? ReplicationState.REPL_STATE_UNKNOWN, style),
    },
    {
      header: "LAST SUCCESS",
      value: (j) => ago(st(j)?.lastSuccess, now),
      volatile: true,
      sort: (j) => st(j)?.lastSuccess?.seconds ?? 0n,
    },
    {
      header: "NEXT RUN",
      value: (j) => until(st(j)?.nextRun, now),
      volatile: true,
      sort: (j) => st(j)?.nextRun?.seconds ?? 0n,
    },
    { header: "POLICY", wide: true, value: (j) => j.plan?.policy || "default" },
    { header: "LAST SNAPSHOT", wide: true, value: (j) => st(j)?.lastSnapshotName || "-" },
    {
      header: "SENT",
      wide: true,
      value: (j) => formatBytes(st(j)?.bytesTransferred ?? 0n),
      sort: (j) => st(j)?.bytesTransferred ?? 0n,
    },
    {
      header: "TOOK",
      wide: true,
      value: (j) => (st(j)?.durationMs ? formatEta(Number(st(j)?.durationMs)) : "-"),
    },
    { header: "RUNS", wide: true, value: (j) => String(st(j)?.successfulRuns ?? 0n) },
    { header: "FAILURES", wide: true, value: (j) => String(st(j)?.consecutiveFailures ?? 0) },
    { header: "LAST ERROR", wide: true, value: (j) => (j.status ? errorOf(j.status) : "-") },
  ];
}

/**
 * A status as `key: value` lines (`replication status`). When the latest run
 * failed, its error and what to do about it come first, and neither the
 * bytes of an earlier send (the record keeps the last success's or the failed
 * run's partial ones) nor a follow no run has completed since reads as done.
 */
export function statusFields(s: ReplicationStatus, style: Style, now: number): string {
  const running = s.state === ReplicationState.REPL_STATE_RUNNING;
  const failed = s.state === ReplicationState.REPL_STATE_FAILED;
  const lastRun = failed
    ? `failed after ${formatEta(Number(s.durationMs))}`
    : s.lastSnapshotName === "" && !running
      ? "never"
      : running
        ? `sending (${kindOf(s)}): ${formatBytes(s.bytesTransferred)}${s.bytesExpected > 0n ? ` of ${formatBytes(s.bytesExpected)}` : ""}`
        : `sent ${formatBytes(s.bytesTransferred)} (${kindOf(s)}) in ${formatEta(Number(s.durationMs))}`;
  const state: Field = ["state", replicationState(s.state, style)];
  const error: Field = ["last error", errorOf(s)];
  const advice = failed ? reasonAdvice(s.lastErrorReason) : undefined;
  const head: Field[] = failed
    ? [state, error, ...(advice === undefined ? [] : [["what to do", advice] as Field])]
    : [state];
  // Followed after the last success and the run since failed: the re-pointed send never happened.
  const unfinished =
    failed &&
    s.followedAt !== undefined &&
    (s.lastSuccess === undefined || msFromTimestamp(s.followedAt) > msFromTimestamp(s.lastSuccess));
  return renderFields([
    ["job", s.jobId],
    ...head,
    [running ? "this run" : "last run", lastRun],
    ["last snapshot", s.lastSnapshotName || "-"],
    [
      "last success",
      s.lastSuccess === undefined
        ? "never"
        : `${tableTime(s.lastSuccess)} (${ago(s.lastSuccess, now)})`,
    ],
    ["successful runs", String(s.successfulRuns)],
    ["failures in a row", String(s.consecutiveFailures)],
    ...(failed ? [] : [error]),
    [
      "followed its vm",
      s.followed === ""
        ? "-"
        : `${unfinished ? "not done, no run has succeeded since: " : ""}${s.followed}${s.followedAt === undefined ? "" : ` (${ago(s.followedAt, now)})`}`,
    ],
    [
      "next run",
      s.nextRun === undefined ? "-" : `${tableTime(s.nextRun)} (${until(s.nextRun, now)})`,
    ],
  ]);
}

/**
 * Where a run stands, for the progress bar or lines. The state a run ends in
 * keeps the sending phase (at 100% on success): the summary line says how it ended.
 */
export function replicationProgress(s: ReplicationStatus): ProgressUpdate {
  const phase = `sending ${s.incremental ? "incremental" : "full"} stream`;
  if (s.state === ReplicationState.REPL_STATE_SUCCESS) return { phase, percent: 100 };
  if (s.bytesExpected === 0n) return { phase: "snapshotting", percent: 0 };
  return {
    phase,
    percent: Number((s.bytesTransferred * 10_000n) / s.bytesExpected) / 100,
    doneBytes: s.bytesTransferred,
    totalBytes: s.bytesExpected,
  };
}

/** The last line of `run` and `watch`. */
export function replicationSummary(s: ReplicationStatus | undefined): string {
  if (s === undefined) return "no status received";
  switch (s.state) {
    case ReplicationState.REPL_STATE_SUCCESS:
      return `succeeded: sent ${formatBytes(s.bytesTransferred)} (${kindOf(s)}) in ${formatEta(Number(s.durationMs))}; snapshot ${s.lastSnapshotName}`;
    case ReplicationState.REPL_STATE_FAILED:
      return `failed: ${errorOf(s)}${s.nextRun === undefined ? "" : `; the scheduler retries ${until(s.nextRun, Date.now())}`}`;
    default:
      // The stream ended before the run did (the daemon restarting): the run may go on.
      return `the server stopped sending updates while the job was ${(STATE_NAMES[s.state] ?? "unknown").toLowerCase()}; watch again with hvctl replication watch ${s.jobId}`;
  }
}
