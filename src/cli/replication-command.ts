/*
 * `hvctl replication`: the replication noun with its list, status and delete
 * commands; plan is added from replication-plan.ts, run and watch from
 * replication-run.ts, and how jobs and statuses read is in
 * replication-status.ts.
 */
import { Command } from "commander";
import {
  type ReplicationJob,
  ReplicationJobSchema,
  ReplicationStatusSchema,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import { messageJson } from "./output.js";
import { addReplicationPlanCommand } from "./replication-plan.js";
import { addReplicationRunCommands } from "./replication-run.js";
import { jobColumns, statusFields } from "./replication-status.js";

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
  addReplicationPlanCommand(replication, cli);
  addReplicationRunCommands(replication, cli);

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
