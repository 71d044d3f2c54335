/*
 * `hvctl replication run|watch`: starting a job's run and following it to
 * its end, with the exit codes that say how it ended.
 */
import type { Command } from "commander";
import {
  ReplicationState,
  ReplicationStatusSchema,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { EXIT } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { messageJson } from "./output.js";
import { watchProgress } from "./progress.js";
import { followReplication } from "./replication-follow.js";
import { replicationProgress, replicationSummary } from "./replication-status.js";

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

/** Adds `run` and `watch` to the replication noun (replication-command.ts). */
export function addReplicationRunCommands(replication: Command, cli: () => CliContext): void {
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
}
