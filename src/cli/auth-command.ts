import { Command } from "commander";
import { AccessService } from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";

/** `hvctl auth ...`: who am I, and may I. */
export function authCommand(cli: () => CliContext): Command {
  const auth = new Command("auth").description("your identity and permissions");
  auth
    .command("whoami")
    .description("show the identity, roles and tenant the server sees")
    .action(async () => {
      const ctx = cli();
      const me = await ctx.client(AccessService).whoAmI({}, { timeoutMs: ctx.timeoutMs });
      if (ctx.format === "json") {
        ctx.out(
          `${JSON.stringify({ principal: me.principal, authMethod: me.authMethod, roles: me.roles, tenant: me.tenant, apiKeyId: me.apiKeyId }, null, 2)}\n`,
        );
        return;
      }
      ctx.out(
        `${[
          `principal:  ${me.principal}`,
          `via:        ${me.authMethod}${me.apiKeyId === "" ? "" : ` (key ${me.apiKeyId})`}`,
          `roles:      ${me.roles.join(", ") || "(none)"}`,
          `tenant:     ${me.tenant || "(cluster-wide)"}`,
        ].join("\n")}\n`,
      );
    });
  auth
    .command("can-i")
    .description("check a permission (exit 0: yes, 1: no)")
    .argument("<permission>", "for example node:register or storage:snapshot:create")
    .option("--as <principal>", "check another principal (needs auth:check:any)")
    .option("--node <id>", "the node acted on, for node-scoped permissions")
    .action(async (permission: string, opts: { as?: string; node?: string }) => {
      const ctx = cli();
      const d = await ctx
        .client(AccessService)
        .checkPermission(
          { permission, principal: opts.as ?? "", nodeId: opts.node ?? "" },
          { timeoutMs: ctx.timeoutMs },
        );
      if (ctx.format === "json")
        ctx.out(
          `${JSON.stringify({ allowed: d.allowed, reason: d.reason, roles: d.roles }, null, 2)}\n`,
        );
      else ctx.out(`${d.allowed ? "yes" : "no"} (${d.reason})\n`);
      if (!d.allowed) ctx.setExitCode(1);
    });
  return auth;
}
