import { Command } from "commander";
import { AccessService, type RoleInfo, RoleInfoSchema } from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { splitList } from "./duration.js";
import { withExamples } from "./help-text.js";
import { type Column, messageJson, renderColumns } from "./output.js";

const COLUMNS: Column<RoleInfo>[] = [
  { header: "NAME", value: (r) => r.name },
  { header: "SOURCE", value: (r) => (r.builtIn ? "built-in" : "custom") },
  { header: "GRANTS", value: (r) => r.grants.join(",") },
];

/** `hvctl role ...`: roles and the permissions they grant. */
export function roleCommand(cli: () => CliContext): Command {
  const role = new Command("role").description("roles and the permissions they grant");
  withExamples(
    role,
    "hvctl role list",
    "hvctl role set snapshotter --grants storage:snapshot:*,vm:list",
  );
  withExamples(
    role
      .command("list")
      .description(
        "every role: built-in, from the configuration file, and custom ones in the store",
      )
      .action(async () => {
        const ctx = cli();
        const r = await ctx.client(AccessService).listRoles({});
        ctx.print({ roles: r.roles.map((x) => messageJson(RoleInfoSchema, x)) }, () =>
          renderColumns(COLUMNS, r.roles, ctx.wide),
        );
      }),
    "hvctl role list",
  );
  withExamples(
    role
      .command("set")
      .description("create or replace a custom role (you cannot grant what you do not hold)")
      .argument("<name>", "lower-case letters, digits and -")
      .requiredOption("--grants <grants>", "comma-separated permissions, a:b:* wildcards or *")
      .action(async (name: string, opts: { grants: string }) => {
        const ctx = cli();
        const grants = splitList(opts.grants);
        if (grants.length === 0)
          throw new UsageError("--grants: at least one (hvctl role delete removes a role)");
        const r = await ctx.client(AccessService).setRole({ name, grants });
        ctx.print(messageJson(RoleInfoSchema, r), () => `role ${r.name}: ${r.grants.join(", ")}\n`);
      }),
    "hvctl role set snapshotter --grants storage:snapshot:*,node:list,vm:list",
  );
  withExamples(
    role
      .command("delete")
      .description("remove a custom role")
      .argument("<name>", "the role")
      .action(async (name: string) => {
        const ctx = cli();
        await ctx.client(AccessService).setRole({ name, grants: [] });
        ctx.print({ name, deleted: true }, () => `role ${name} deleted\n`);
      }),
    "hvctl role delete snapshotter",
  );
  return role;
}
