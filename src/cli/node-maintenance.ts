import type { Command } from "commander";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import {
  type DrainProgress,
  DrainProgressSchema,
  NodeService,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { messageJson } from "./output.js";
import { watchProgress } from "./progress.js";

/**
 * `hvctl node cordon|uncordon|drain`: taking a node out of service and back.
 * Added to the node noun by node-command.ts.
 */
export function addMaintenanceCommands(node: Command, cli: () => CliContext): void {
  withExamples(
    node
      .command("remove")
      .description("forget a node that is drained and gone (cordoned, NotReady, no VMs)")
      .argument("<node>", "the node id")
      .action(async (id: string) => {
        const ctx = cli();
        const r = await ctx.client(NodeService).removeNode({ id: { id } });
        ctx.print(messageJson(NodeSummarySchema, r), () => `node ${id} removed\n`);
      }),
    "hvctl node drain node-03 && hvctl node remove node-03   # once node-03 is NotReady",
  );
  for (const [verb, cordoned] of [
    ["cordon", true],
    ["uncordon", false],
  ] as const) {
    const cmd = node
      .command(verb)
      .description(
        cordoned
          ? "stop new VMs, migrations and failovers landing on a node (its VMs keep running)"
          : "let VMs land on a cordoned node again",
      )
      .argument("<id>", "the node id")
      .option("--reason <text>", "why, for the audit trail");
    if (cordoned)
      cmd.option(
        "--out-of-service",
        "say the node is off (powered down or isolated): its VMs without HA may then be failed over",
      );
    cmd.action(async (id: string, opts: { reason?: string; outOfService?: boolean }) => {
      const ctx = cli();
      const client = ctx.client(NodeService);
      const req = {
        id: { id },
        reason: opts.reason ?? "",
        outOfService: opts.outOfService ?? false,
      };
      const n = cordoned ? await client.cordonNode(req) : await client.uncordonNode(req);
      ctx.print(
        messageJson(NodeSummarySchema, n),
        () =>
          `node ${id} ${n.cordoned ? "cordoned" : "uncordoned"}${n.outOfService ? " (out of service)" : ""}\n`,
      );
    });
    withExamples(
      cmd,
      ...(cordoned
        ? [
            'hvctl node cordon node-02 --reason "firmware update"',
            'hvctl node cordon node-03 --out-of-service --reason "powered off"',
          ]
        : ["hvctl node uncordon node-02"]),
    );
  }

  withExamples(
    node
      .command("drain")
      .description("cordon a node and migrate every VM off it, a few at a time, showing progress")
      .argument("<id>", "the node id")
      .option("--max-parallel <n>", "migrations at a time (1-16)", "2")
      .option("--allow-downtime", "move VMs that cannot migrate live stopped")
      .action(async (id: string, opts: { maxParallel: string; allowDowntime?: boolean }) => {
        const ctx = cli();
        const maxParallel = Number(opts.maxParallel);
        if (!Number.isInteger(maxParallel) || maxParallel < 1 || maxParallel > 16)
          throw new UsageError(`--max-parallel: expected 1 to 16, got "${opts.maxParallel}"`);
        const client = ctx.client(NodeService);
        const stop = new AbortController();
        const events: DrainProgress[] = [];
        const { last, outcome } = await watchProgress(ctx.io, {
          label: `drain ${id}`,
          open: (signal) =>
            client.drainNode(
              { id: { id }, maxParallel, allowDowntime: opts.allowDowntime === true },
              { signal: AbortSignal.any([signal, stop.signal]) },
            ),
          progress: (e) => {
            events.push(e);
            const done = e.succeeded + e.failed;
            return {
              phase: `${e.succeeded} moved, ${e.failed} failed, ${e.inFlight} moving${lineOf(e)}`,
              percent: e.total === 0 ? 100 : Math.floor((done * 100) / e.total),
            };
          },
          // Ending the call stops new migrations; those under way finish.
          cancel: async () => stop.abort(),
          summary: (e) => e?.message ?? "no progress received",
        });
        if (ctx.format === "json" || ctx.format === "yaml")
          ctx.print({ events: events.map((e) => messageJson(DrainProgressSchema, e)) }, () => "");
        if (outcome !== "stopped" && (last === undefined || last.failed > 0 || !last.done))
          ctx.setExitCode(1);
      }),
    "hvctl node drain node-02",
    "hvctl node drain node-02 --max-parallel 4 --allow-downtime",
  );
}

/** ": vm-007 -> node-03" for an event about one migration. */
function lineOf(e: DrainProgress): string {
  const m = e.migration;
  if (m === undefined || m.vm === undefined) return "";
  const to = m.target?.nodeId?.id;
  const failed = m.state === MigrationState.FAILED || (to === undefined && e.message.includes(":"));
  return failed ? `; ${e.message}` : `; ${m.vm.vmId} -> ${to ?? "?"}`;
}
