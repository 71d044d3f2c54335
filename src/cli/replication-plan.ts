/*
 * `hvctl replication plan`: storing a replication job, with the parsers of
 * the policy flags it takes (--interval, --keep, --bandwidth).
 */
import type { Command } from "commander";
import {
  ReplicationJobSchema,
  StorageBackend,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { DATASET_HELP, datasetText, noteImplicitZfs, parseDataset } from "./dataset-args.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { messageJson } from "./output.js";
import { until } from "./replication-status.js";

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

/** Adds `plan` to the replication noun (replication-command.ts). */
export function addReplicationPlanCommand(replication: Command, cli: () => CliContext): void {
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
}
