import { Command } from "commander";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { eventColumns, OBJECT_KINDS, recentEvents } from "./events-command.js";
import { withExamples } from "./help-text.js";
import { renderColumns } from "./output.js";

/** Each kind's `get`: the noun's own command renders the object, so describe shows it the same way. */
const SHOW: Readonly<
  Record<string, { noun: () => Promise<(cli: () => CliContext) => Command>; verb: string }>
> = {
  vm: { noun: async () => (await import("./vm-command.js")).vmCommand, verb: "get" },
  node: { noun: async () => (await import("./node-command.js")).nodeCommand, verb: "get" },
  migration: {
    noun: async () => (await import("./migration-command.js")).migrationCommand,
    verb: "get",
  },
  replication: {
    noun: async () => (await import("./replication-command.js")).replicationCommand,
    verb: "status",
  },
};

/** Events shown under the object. */
const RECENT = 20;

/**
 * `hvctl describe KIND ID`: the object as `get` shows it, then its recent
 * events (kubectl describe): what the cluster did with it and why.
 */
export function describeCommand(cli: () => CliContext): Command {
  const describe = new Command("describe")
    .description("show an object and its recent events: what happened to it and why")
    .argument("<kind>", `one of ${Object.keys(SHOW).join(", ")}`)
    .argument("<id>", "the object's id (a replication job's id)")
    .action(async (kind: string, id: string) => {
      const show = SHOW[kind];
      const objectKind = OBJECT_KINDS[kind];
      if (show === undefined || objectKind === undefined)
        throw new UsageError(
          `describe: KIND is one of ${Object.keys(SHOW).join(", ")}, got "${kind}"`,
        );
      const ctx = cli();
      if (ctx.format === "json" || ctx.format === "yaml")
        throw new UsageError(
          `describe is for people; for scripts: hvctl ${kind} ${show.verb} ${id} -o ${ctx.format} and hvctl events --for ${kind}/${id} -o ${ctx.format}`,
        );
      // The object first: one the caller may not see fails here, like a missing one.
      const noun = (await show.noun())(() => ctx);
      noun.exitOverride();
      await noun.parseAsync([show.verb, id], { from: "user" });
      const { events } = await recentEvents(ctx, { objectKind, objectId: id }, RECENT);
      ctx.out(
        events.length === 0
          ? "\nEvents: <none>\n"
          : `\nEvents:\n${renderColumns(eventColumns(ctx.style, false), events, ctx.wide)
              .split("\n")
              .map((l) => (l === "" ? l : `  ${l}`))
              .join("\n")}`,
      );
    });
  return withExamples(
    describe,
    "hvctl describe vm vm-007",
    "hvctl describe node node-03",
    "hvctl describe migration m-0mx5qveww-0058ae51",
    "hvctl describe replication vm-002-disk0-to-node-02",
  );
}
