/*
 * `hvctl migration`: the migration noun with its plan, cancel, list and get
 * commands; run and watch are added from migration-run.ts, and how a
 * migration reads is in migration-status.ts.
 */
import { Command, Option } from "commander";
import {
  MigrationPlanResultSchema,
  MigrationSchema,
  MigrationService,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import { addMigrationRunCommands } from "./migration-run.js";
import { migrationColumns, migrationFields } from "./migration-status.js";
import { messageJson, renderTable } from "./output.js";

const STATES: Record<string, MigrationState> = {
  pending: MigrationState.PENDING,
  running: MigrationState.RUNNING,
  succeeded: MigrationState.SUCCEEDED,
  failed: MigrationState.FAILED,
  cancelled: MigrationState.CANCELLED,
};

/** `hvctl migration ...`: plan, run and follow VM migrations. */
export function migrationCommand(cli: () => CliContext): Command {
  const migration = new Command("migration").description(
    "plan, run, follow and cancel VM migrations",
  );
  withExamples(
    migration,
    "hvctl migration plan --vm vm-001",
    "hvctl migration run --vm vm-001 --target node-02",
    "hvctl migration list",
  );

  withExamples(
    migration
      .command("plan")
      .description("check whether a VM can move, listing every check and its reason")
      .requiredOption("--vm <id>", "the VM")
      .option("--target <node>", "where to (default: the planner picks the best node)")
      .option("--source <node>", "where you expect the VM to be")
      .option("--allow-downtime", "accept moving it stopped when it cannot move live")
      .action(
        async (opts: { vm: string; target?: string; source?: string; allowDowntime?: boolean }) => {
          const ctx = cli();
          const plan = await ctx.client(MigrationService).prepareMigration({
            vm: { vmId: opts.vm },
            ...(opts.target === undefined ? {} : { target: { nodeId: { id: opts.target } } }),
            ...(opts.source === undefined ? {} : { source: { nodeId: { id: opts.source } } }),
            allowDowntime: opts.allowDowntime === true,
          });
          ctx.print(messageJson(MigrationPlanResultSchema, plan), () => {
            const rows = plan.checks.map((c) => [
              c.name,
              c.passed ? ctx.style.good("ok") : ctx.style.bad("FAIL"),
              c.reason,
            ]);
            const verdict = plan.allowed
              ? ctx.style.good(
                  `allowed: ${plan.live ? "live" : "offline"} migration ${plan.source?.nodeId?.id ?? ""} -> ${plan.target?.nodeId?.id ?? ""}${plan.targetReason && plan.targetReason !== "requested" ? ` (${plan.targetReason})` : ""}`,
                )
              : ctx.style.bad(`not allowed: ${plan.message.replace(/^not allowed: /, "")}`);
            return `${renderTable(["CHECK", "RESULT", "REASON"], rows)}\n${verdict}\n`;
          });
          if (!plan.allowed) ctx.setExitCode(1);
        },
      ),
    "hvctl migration plan --vm vm-001",
    "hvctl migration plan --vm vm-001 --target node-03 --allow-downtime -o json",
  );
  addMigrationRunCommands(migration, cli);

  withExamples(
    migration
      .command("cancel")
      .description("stop a running migration; the VM stays on its source")
      .argument("<id>", "the migration id")
      .action(async (id: string) => {
        const ctx = cli();
        const m = await ctx.client(MigrationService).cancelMigration({ migrationId: id });
        ctx.print(messageJson(MigrationSchema, m), () => migrationFields(m, ctx.style));
      }),
    "hvctl migration cancel m-0mi0abc12-00a1b2c3",
  );

  withExamples(
    withListFlags(
      migration
        .command("list")
        .description("list migrations and failovers, newest first")
        .option("--vm <id>", "only this VM's")
        .addOption(
          new Option("--state <state>", "only in this state").choices(Object.keys(STATES)),
        ),
      { watch: true },
    ).action(async (opts: ListFlags & { vm?: string; state?: string }) => {
      const ctx = cli();
      const req = {
        pageSize: 500,
        ...(opts.vm === undefined ? {} : { vm: { vmId: opts.vm } }),
        state: STATES[opts.state ?? ""] ?? MigrationState.UNSPECIFIED,
        tenant: opts.tenant ?? "",
      };
      const client = ctx.client(MigrationService);
      await showList(ctx, {
        columns: migrationColumns(ctx.style),
        flags: opts,
        plural: "migrations",
        name: "migration",
        json: (m) => messageJson(MigrationSchema, m),
        key: (m) => m.migrationId,
        page: (pageToken) =>
          client
            .listMigrations({ ...req, pageToken })
            .then((r) => ({ items: r.migrations, next: r.nextPageToken })),
        watch: {
          open: (watch, from, signal) => watch().watchMigrations({ list: req, from }, { signal }),
          item: (e) => e.migration,
        },
      });
    }),
    "hvctl migration list",
    "hvctl migration list --vm vm-001 --state failed -o wide",
    "hvctl migration list --watch",
  );

  withExamples(
    migration
      .command("get")
      .description("show one migration")
      .argument("<id>", "the migration id")
      .action(async (id: string) => {
        const ctx = cli();
        const m = await ctx.client(MigrationService).getMigration({ migrationId: id });
        ctx.print(messageJson(MigrationSchema, m), () => migrationFields(m, ctx.style));
      }),
    "hvctl migration get m-0mi0abc12-00a1b2c3 -o yaml",
  );
  return migration;
}
