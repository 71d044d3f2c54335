import { Command } from "commander";
import { msFromTimestamp } from "../core/index.js";
import {
  type ReplicationJob,
  ReplicationJobSchema,
  ReplicationState,
  type ReplicationStatus,
  ReplicationStatusSchema,
  StorageBackend,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { EXIT, reasonAdvice, UsageError } from "./cli-errors.js";
import { DATASET_HELP, datasetText, noteImplicitZfs, parseDataset } from "./dataset-args.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import {
  type Column,
  formatBytes,
  messageJson,
  renderFields,
  type Style,
  shortAge,
  tableTime,
} from "./output.js";
import { formatEta, type ProgressUpdate, watchProgress } from "./progress.js";
import { followReplication } from "./replication-follow.js";

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
const until = (t: Time, now: number) => {
  const ms = msOf(t);
  if (ms === undefined) return "-";
  return ms <= now ? "due" : `in ${shortAge(ms - now)}`;
};
/** `full` or `incremental from BASE`. */
const kindOf = (s: ReplicationStatus) =>
  s.incremental ? `incremental from ${s.baseSnapshotName || "?"}` : "full";
const errorOf = (s: ReplicationStatus) =>
  s.lastError === "" ? "-" : `${s.lastError}${s.lastErrorReason ? ` (${s.lastErrorReason})` : ""}`;

function jobColumns(style: Style, now: number): Column<ReplicationJob>[] {
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

/** Parses --interval: 15m, 2h, 1d (s, m, h or d), from 1m to 30d, as the policy takes it. */
function parseInterval(text: string): string {
  const m = /^(\d{1,7})([smhd])$/.exec(text);
  const unit = { s: 1, m: 60, h: 3600, d: 86_400 }[(m?.[2] ?? "s") as "s" | "m" | "h" | "d"];
  const seconds = m === null ? Number.NaN : Number(m[1]) * unit;
  if (!(seconds >= 60 && seconds <= 30 * 86_400))
    throw new UsageError(
      `--interval: expected a duration like 15m, 2h or 1d (s, m, h or d), from 1m to 30d, got "${text}"`,
    );
  return text;
}

const RATE_UNITS: Record<string, number> = {
  "": 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * Parses --bandwidth (bytes per second: 50M, 50MiB, 1.5G, 800K; K, M and G
 * are powers of 1024, as in the policy) into the policy's `bwlimit` form.
 */
export function parseBandwidth(text: string): string {
  const m = /^(\d{1,12}(?:\.\d{1,3})?)\s*([A-Za-z]*)(?:\/s)?$/.exec(text.trim());
  const unit = m === null ? undefined : RATE_UNITS[(m[2] ?? "").toLowerCase()];
  const bytes = m === null || unit === undefined ? Number.NaN : Math.round(Number(m[1]) * unit);
  if (!(bytes >= 1))
    throw new UsageError(
      `--bandwidth: expected bytes per second like 50M, 50MiB or 1.5G (K, M, G: powers of 1024), got "${text}"`,
    );
  for (const [suffix, size] of [
    ["G", 1024 ** 3],
    ["M", 1024 ** 2],
    ["K", 1024],
  ] as const)
    if (bytes % size === 0 && bytes / size < 1e7) return `${bytes / size}${suffix}`;
  // Not a whole number of KiB: bytes when they fit the policy's 7 digits, else whole KiB.
  if (bytes < 1e7) return String(bytes);
  const kib = Math.round(bytes / 1024);
  if (kib >= 1e7) throw new UsageError(`--bandwidth: "${text}" is too large`);
  return `${kib}K`;
}

/** `hvctl replication ...`: ZFS replication jobs between nodes. */
export function replicationCommand(cli: () => CliContext): Command {
  const replication = new Command("replication").description(
    "ZFS replication jobs: incremental sends of a dataset to another node on a schedule",
  );
  withExamples(
    replication,
    "hvctl replication list",
    "hvctl replication run vm-002-disk0-to-node-02",
  );

  withExamples(
    replication
      .command("plan")
      .description(
        "store a replication job (the scheduler runs it now and then every --interval); the same plan again returns the job",
      )
      .requiredOption("--dataset <dataset>", "the ZFS dataset, zfs:POOL/NAME or POOL/NAME")
      .requiredOption("--source <node>", "the node that holds the dataset")
      .requiredOption("--target <node>", "the node that receives the copies")
      .option(
        "--id <id>",
        "the job id: lower-case letters, digits, '.', '_' or '-' (default repl-<random>)",
      )
      .option("--interval <duration>", "how often it runs: 30m, 2h, 1d (default 15m, at least 1m)")
      .option("--keep <n>", "replication snapshots kept on each side, 1-100 (default 3)")
      .option(
        "--bandwidth <rate>",
        "send at most this many bytes per second: 50M, 1.5G (powers of 1024; default unlimited)",
      )
      .addHelpText("after", `\n${DATASET_HELP}; replication takes ZFS datasets only.\n`)
      .action(
        async (opts: {
          dataset: string;
          source: string;
          target: string;
          id?: string;
          interval?: string;
          keep?: string;
          bandwidth?: string;
        }) => {
          const ctx = cli();
          const dataset = parseDataset("--dataset", opts.dataset);
          if (dataset.ref.backend !== StorageBackend.BACKEND_ZFS)
            throw new UsageError(
              `--dataset: replication takes ZFS datasets (zfs:POOL/NAME), got "${opts.dataset}"`,
            );
          if (opts.id !== undefined && !/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/.test(opts.id))
            throw new UsageError(
              `--id: 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending alphanumeric, got "${opts.id}"`,
            );
          if (opts.source === opts.target)
            throw new UsageError("--target: must be another node than --source");
          const policy = [
            ...(opts.interval === undefined ? [] : [`interval=${parseInterval(opts.interval)}`]),
            ...(opts.keep === undefined ? [] : [`keep=${parseWhole("--keep", opts.keep, 1, 100)}`]),
            ...(opts.bandwidth === undefined ? [] : [`bwlimit=${parseBandwidth(opts.bandwidth)}`]),
          ].join(" ");
          const job = await noteImplicitZfs(ctx.err, dataset, opts.dataset, () =>
            ctx.client(StorageService).planZfsReplication({
              jobId: opts.id ?? "",
              dataset: dataset.ref,
              source: { nodeId: { id: opts.source } },
              target: { nodeId: { id: opts.target } },
              policy,
            }),
          );
          ctx.print(
            messageJson(ReplicationJobSchema, job),
            () =>
              `replication job ${job.jobId} planned: ${datasetText(job.plan?.dataset)} from ${opts.source} to ${opts.target} (${job.plan?.policy || "default policy: interval=15m keep=3"}); next run ${until(job.status?.nextRun, Date.now())}\n`,
          );
        },
      ),
    "hvctl replication plan --dataset zfs:tank/vm-002-disk0 --source node-01 --target node-03 --id vm-002-offsite --interval 1h --keep 5",
    "hvctl replication plan --dataset tank/vm-005-disk0 --source node-02 --target node-01 --bandwidth 50M -o json",
  );

  /**
   * Watches (and for `run`, starts) a run of a job: a progress bar or lines
   * on stderr, the state it ends in on stdout for -o json|yaml. Exit 1 unless
   * it succeeds while watched, 5 when the job is deleted meanwhile; Ctrl-C
   * stops watching with exit 0, as every watch does (the run goes on).
   */
  const follow = async (ctx: CliContext, jobId: string, start: boolean) => {
    const client = ctx.client(StorageService);
    let deleted = false;
    const { last, outcome } = await watchProgress(ctx.io, {
      label: `replication ${jobId}`,
      open: async function* (signal) {
        const note = (text: string) => ctx.err(text);
        for await (const s of followReplication({ client, jobId, signal, start, note })) {
          deleted = s.state === ReplicationState.REPL_STATE_UNKNOWN;
          if (deleted) return;
          yield s;
        }
      },
      progress: replicationProgress,
      resumeHint: `hvctl replication watch ${jobId}`,
      summary: (s) => (deleted ? "the job was deleted" : replicationSummary(s)),
    });
    if (outcome === "stopped") return;
    if (deleted) ctx.setExitCode(EXIT.notFound);
    else if (last?.state !== ReplicationState.REPL_STATE_SUCCESS) ctx.setExitCode(EXIT.other);
    if (!deleted && last !== undefined && !["table", "wide"].includes(ctx.format))
      ctx.print(messageJson(ReplicationStatusSchema, last), () => "");
  };

  withExamples(
    replication
      .command("run")
      .description(
        "run a job now and show its progress until it ends (exit 1 if it fails); Ctrl-C stops watching, the run goes on",
      )
      .argument("<id>", "the job id")
      .action((id: string) => follow(cli(), id, true)),
    "hvctl replication run vm-002-disk0-to-node-02",
    "hvctl replication run vm-002-disk0-to-node-02 -o json 2>/dev/null | jq .bytesTransferred",
  );

  withExamples(
    replication
      .command("watch")
      .description(
        "show the progress of a job's run until it ends; an idle job is watched until its next run ends",
      )
      .argument("<id>", "the job id")
      .action((id: string) => follow(cli(), id, false)),
    "hvctl replication watch vm-002-disk0-to-node-02",
  );

  withExamples(
    withListFlags(
      replication.command("list").description("list replication jobs with their last and next run"),
      { watch: true },
    ).action(async (opts: ListFlags) => {
      const ctx = cli();
      const req = { pageSize: 500, tenant: opts.tenant ?? "" };
      const client = ctx.client(StorageService);
      // Ages and the next run as of each rendering (a watch redraws later).
      const columns = jobColumns(ctx.style, Date.now()).map((c) => ({
        ...c,
        value: (j: ReplicationJob) =>
          (jobColumns(ctx.style, Date.now()).find((d) => d.header === c.header) ?? c).value(j),
      }));
      await showList(ctx, {
        columns,
        flags: opts,
        plural: "jobs",
        name: "job",
        json: (j) => messageJson(ReplicationJobSchema, j),
        key: (j) => j.jobId,
        page: (pageToken) =>
          client
            .listReplicationJobs({ ...req, pageToken })
            .then((r) => ({ items: r.jobs, next: r.nextPageToken })),
        watch: {
          open: (watch, from, signal) =>
            watch().watchReplicationJobs({ list: req, from }, { signal }),
          item: (e) => e.job,
        },
        empty: "no replication jobs\n",
      });
    }),
    "hvctl replication list",
    "hvctl replication list -o wide --sort-by next-run",
    "hvctl replication list -o json | jq -r '.jobs[] | select(.status.state == \"REPL_STATE_FAILED\") | .jobId'",
    "hvctl replication list --watch",
  );

  withExamples(
    replication
      .command("status")
      .description("show a job's state: last run, last error, next run")
      .argument("<id>", "the job id")
      .action(async (id: string) => {
        const ctx = cli();
        const s = await ctx.client(StorageService).getReplicationStatus({ jobId: id });
        ctx.print(messageJson(ReplicationStatusSchema, s), () =>
          statusFields(s, ctx.style, Date.now()),
        );
      }),
    "hvctl replication status vm-002-disk0-to-node-02",
    "hvctl replication status vm-002-disk0-to-node-02 -o yaml",
  );

  withExamples(
    replication
      .command("delete")
      .description("delete a job that is not running; the replicated data stays on both nodes")
      .argument("<id>", "the job id")
      .action(async (id: string) => {
        const ctx = cli();
        const job = await ctx.client(StorageService).deleteReplicationJob({ jobId: id });
        ctx.print(
          messageJson(ReplicationJobSchema, job),
          () => `replication job ${job.jobId} deleted; the replicated data stays\n`,
        );
      }),
    "hvctl replication delete vm-002-offsite",
  );
  return replication;
}
