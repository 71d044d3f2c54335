/*
 * `hvctl migration run|watch`: starting a migration and following it to
 * its end, with the Ctrl-C question and the exit code that says how it ended.
 */
import type { Command } from "commander";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type Migration,
  MigrationSchema,
  MigrationService,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { migrationProgress, phaseName, title } from "./migration-status.js";
import { messageJson } from "./output.js";
import { watchProgress } from "./progress.js";

const active = (m: Migration) =>
  m.state === MigrationState.PENDING || m.state === MigrationState.RUNNING;

/**
 * Follows a migration until it ends, with the progress bar or lines and the
 * Ctrl-C question; exit code 1 when it did not succeed.
 */
export async function followMigration(ctx: CliContext, id: string): Promise<void> {
  const client = ctx.client(MigrationService);
  const { last, outcome } = await watchProgress(ctx.io, {
    label: `migration ${id}`,
    open: (signal) => client.watchMigration({ migrationId: id }, { signal }),
    progress: migrationProgress,
    cancel: async () => {
      await client.cancelMigration({ migrationId: id });
    },
    resumeHint: `hvctl migration watch ${id}`,
    summary: (m) =>
      m === undefined
        ? "no state received"
        : `${title(MigrationState[m.state]).toLowerCase()}: ${m.message || phaseName(m)}`,
  });
  if (outcome === "stopped") return;
  const final =
    last !== undefined && !active(last) ? last : await client.getMigration({ migrationId: id });
  if (ctx.format === "json" || ctx.format === "yaml")
    ctx.print(messageJson(MigrationSchema, final), () => "");
  if (final.state !== MigrationState.SUCCEEDED) ctx.setExitCode(1);
}

/** Adds `run` and `watch` to the migration noun (migration-command.ts). */
export function addMigrationRunCommands(migration: Command, cli: () => CliContext): void {
  withExamples(
    migration
      .command("run")
      .description("start a migration and follow it to the end (Ctrl-C: cancel or stop watching)")
      .requiredOption("--vm <id>", "the VM")
      .option("--target <node>", "where to (default: the planner picks the best node)")
      .option("--allow-downtime", "move it stopped when it cannot move live")
      .option("--detach", "print the migration id and return at once")
      .option(
        "--no-progress",
        "wait for the end without progress (one MigrateVM call, bounded by --timeout)",
      )
      .action(
        async (opts: {
          vm: string;
          target?: string;
          allowDowntime?: boolean;
          detach?: boolean;
          progress: boolean;
        }) => {
          if (opts.detach && !opts.progress)
            throw new UsageError(
              "--detach and --no-progress: choose one (--detach returns at once, --no-progress waits)",
            );
          const ctx = cli();
          if (!opts.progress) {
            const r = await ctx.client(MigrationService).migrateVM({
              vm: { vmId: opts.vm },
              ...(opts.target === undefined ? {} : { target: { nodeId: { id: opts.target } } }),
              allowDowntime: opts.allowDowntime === true,
            });
            const ok = r.status === StatusCode.STATUS_OK;
            ctx.print(
              { status: StatusCode[r.status], message: r.message, migrationId: r.migrationId },
              () => `migration ${r.migrationId}: ${ok ? "succeeded" : "failed"}: ${r.message}\n`,
            );
            if (!ok) ctx.setExitCode(1);
            return;
          }
          const m = await ctx.client(MigrationService).startMigration({
            vm: { vmId: opts.vm },
            ...(opts.target === undefined ? {} : { target: { nodeId: { id: opts.target } } }),
            allowDowntime: opts.allowDowntime === true,
          });
          ctx.err(
            `migration ${m.migrationId}: ${m.vm?.vmId} ${m.source?.nodeId?.id} -> ${m.target?.nodeId?.id} (${m.live ? "live" : "offline"})\n`,
          );
          if (opts.detach) {
            ctx.print(messageJson(MigrationSchema, m), () => m.migrationId);
            return;
          }
          await followMigration(ctx, m.migrationId);
        },
      ),
    "hvctl migration run --vm vm-001",
    "hvctl migration run --vm vm-004 --target node-02 --allow-downtime",
    "hvctl migration run --vm vm-001 --detach",
    "hvctl --timeout 10m migration run --vm vm-001 --no-progress",
  );

  withExamples(
    migration
      .command("watch")
      .description("follow a running migration")
      .argument("<id>", "the migration id")
      .action(async (id: string) => followMigration(cli(), id)),
    "hvctl migration watch m-0mi0abc12-00a1b2c3",
  );
}
