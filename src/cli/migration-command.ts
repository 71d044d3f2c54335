import { Command, Option } from "commander";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type Migration,
  MigrationKind,
  MigrationPhase,
  MigrationPlanResultSchema,
  MigrationSchema,
  MigrationService,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import {
  type Column,
  formatBytes,
  messageJson,
  renderFields,
  renderTable,
  type Style,
  tableTime,
} from "./output.js";
import type { ProgressUpdate } from "./progress.js";
import { watchProgress } from "./progress.js";

const STATES: Record<string, MigrationState> = {
  pending: MigrationState.PENDING,
  running: MigrationState.RUNNING,
  succeeded: MigrationState.SUCCEEDED,
  failed: MigrationState.FAILED,
  cancelled: MigrationState.CANCELLED,
};

const title = (name: string | undefined) =>
  name === undefined ? "Unknown" : name.charAt(0) + name.slice(1).toLowerCase().replace(/_/g, " ");

/** Succeeded, Failed, ... coloured on a terminal. */
export function migrationState(state: MigrationState, style: Style): string {
  const text = title(MigrationState[state]);
  if (state === MigrationState.SUCCEEDED) return style.good(text);
  if (state === MigrationState.FAILED) return style.bad(text);
  if (state === MigrationState.RUNNING || state === MigrationState.PENDING) return style.warn(text);
  return text;
}

const phaseName = (m: Migration) => title(MigrationPhase[m.phase]).toLowerCase();
const kindName = (m: Migration) => title(MigrationKind[m.kind]).toLowerCase();
const active = (m: Migration) =>
  m.state === MigrationState.PENDING || m.state === MigrationState.RUNNING;

/** The columns of a migration table (`migration list`). */
export function migrationColumns(style: Style): Column<Migration>[] {
  return [
    { header: "ID", value: (m) => m.migrationId },
    { header: "VM", value: (m) => m.vm?.vmId ?? "" },
    { header: "FROM", value: (m) => m.source?.nodeId?.id ?? "" },
    { header: "TO", value: (m) => m.target?.nodeId?.id ?? "" },
    { header: "KIND", value: kindName },
    { header: "STATE", value: (m) => migrationState(m.state, style) },
    { header: "PHASE", value: phaseName },
    { header: "PROGRESS", value: (m) => `${m.progressPct}%`, sort: (m) => m.progressPct },
    { header: "STARTED", value: (m) => tableTime(m.created) },
    { header: "MODE", wide: true, value: (m) => (m.live ? "live" : "offline") },
    { header: "BY", wide: true, value: (m) => m.requestedBy || "-" },
    { header: "MESSAGE", wide: true, value: (m) => m.message || "-" },
  ];
}

function migrationFields(m: Migration, style: Style): string {
  return renderFields([
    ["id", m.migrationId],
    ["vm", m.vm?.vmId ?? ""],
    ["from", m.source?.nodeId?.id ?? ""],
    ["to", m.target?.nodeId?.id ?? ""],
    ["kind", kindName(m)],
    ["mode", m.live ? "live" : "offline (the vm is stopped while it moves)"],
    ["state", migrationState(m.state, style)],
    ["phase", phaseName(m)],
    ["progress", `${m.progressPct}%`],
    [
      "transferred",
      m.bytesTotal > 0n
        ? `${formatBytes(m.bytesTransferred)} of ${formatBytes(m.bytesTotal)}`
        : "-",
    ],
    ["requested by", m.requestedBy || "-"],
    ["started", tableTime(m.created)],
    ["finished", tableTime(m.finished)],
    ["message", m.message || "-"],
  ]);
}

/** What a progress line of a migration shows. */
export function migrationProgress(m: Migration): ProgressUpdate {
  return {
    phase: phaseName(m),
    ...(m.downtimeEstimateMs > 0 ? { detail: `downtime ~${m.downtimeEstimateMs} ms` } : {}),
    percent: m.progressPct,
    ...(m.bytesTotal > 0n ? { doneBytes: m.bytesTransferred, totalBytes: m.bytesTotal } : {}),
  };
}

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
