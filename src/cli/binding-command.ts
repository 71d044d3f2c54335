import { Command } from "commander";
import {
  AccessService,
  type BindingInfo,
  BindingInfoSchema,
} from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { splitList } from "./duration.js";
import { withExamples } from "./help-text.js";
import { type Column, messageJson, renderColumns } from "./output.js";

const COLUMNS: Column<BindingInfo>[] = [
  { header: "PRINCIPAL", value: (b) => b.principal },
  { header: "ROLES", value: (b) => b.roles.join(",") },
  { header: "TENANT", value: (b) => b.tenant || "-" },
  { header: "SOURCE", value: (b) => b.source },
];

/** `hvctl binding ...`: which principal holds which roles. */
export function bindingCommand(cli: () => CliContext): Command {
  const binding = new Command("binding").description("bindings of principals to roles");
  withExamples(binding, "hvctl binding list", "hvctl binding set backup-bot --roles snapshotter");
  withExamples(
    binding
      .command("list")
      .description("every binding, from the configuration file and the store")
      .action(async () => {
        const ctx = cli();
        const r = await ctx.client(AccessService).listBindings({});
        ctx.print({ bindings: r.bindings.map((b) => messageJson(BindingInfoSchema, b)) }, () =>
          renderColumns(COLUMNS, r.bindings, ctx.wide),
        );
      }),
    "hvctl binding list -o yaml",
  );
  withExamples(
    binding
      .command("set")
      .description("set (replace) a principal's stored roles; applies at once on every daemon")
      .argument("<principal>", "certificate CN, API key principal, or jwt:<iss>:<sub>")
      .requiredOption("--roles <roles>", "comma-separated roles")
      .option("--tenant <tenant>", "the roles hold in this tenant only (one binding per tenant)")
      .action(async (principal: string, opts: { roles: string; tenant?: string }) => {
        const ctx = cli();
        const roles = splitList(opts.roles);
        if (roles.length === 0)
          throw new UsageError("--roles: at least one (hvctl binding delete removes a binding)");
        const b = await ctx
          .client(AccessService)
          .setBinding({ principal, roles, tenant: opts.tenant ?? "" });
        ctx.print(
          messageJson(BindingInfoSchema, b),
          () =>
            `${b.principal}: ${b.roles.join(", ")}${b.tenant === "" ? "" : ` (tenant ${b.tenant})`}\n`,
        );
      }),
    "hvctl binding set backup-bot --roles snapshotter",
    "hvctl binding set acme-portal --roles viewer --tenant acme",
  );
  withExamples(
    binding
      .command("delete")
      .description("remove a principal's stored binding (cluster-wide, or in one tenant)")
      .argument("<principal>", "the principal")
      .option("--tenant <tenant>", "the binding in this tenant; others stay")
      .action(async (principal: string, opts: { tenant?: string }) => {
        const ctx = cli();
        await ctx
          .client(AccessService)
          .setBinding({ principal, roles: [], tenant: opts.tenant ?? "" });
        ctx.print({ principal, deleted: true }, () => `binding of ${principal} deleted\n`);
      }),
    "hvctl binding delete backup-bot",
    "hvctl binding delete acme-portal --tenant acme",
  );
  return binding;
}
