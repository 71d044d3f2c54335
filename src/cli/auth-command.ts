import { Command } from "commander";
import { AccessService } from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";
import { CallError, EXIT } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { renderFields } from "./output.js";

/** `hvctl auth ...`: who am I, and may I. */
export function authCommand(cli: () => CliContext): Command {
  const auth = new Command("auth").description("your identity and permissions");
  withExamples(auth, "hvctl auth whoami", "hvctl auth can-i node:register");
  withExamples(
    auth
      .command("whoami")
      .description("show the identity, roles and tenant the server sees")
      .action(async () => {
        const ctx = cli();
        const me = await ctx.client(AccessService).whoAmI({});
        ctx.print(
          {
            principal: me.principal,
            authMethod: me.authMethod,
            roles: me.roles,
            tenant: me.tenant,
            apiKeyId: me.apiKeyId,
          },
          () =>
            renderFields([
              ["principal", me.principal],
              ["via", `${me.authMethod}${me.apiKeyId === "" ? "" : ` (key ${me.apiKeyId})`}`],
              ["roles", me.roles.join(", ") || "(none)"],
              ["tenant", me.tenant || "(cluster-wide)"],
            ]),
        );
      }),
    "hvctl auth whoami",
    "hvctl --context prod auth whoami -o json",
  );
  withExamples(
    auth
      .command("can-i")
      .description("check a permission, with the rule that decides (exit 0: yes, 1: no)")
      .argument("<permission>", "for example node:register or storage:snapshot:create")
      .option("--as <principal>", "check another principal (needs auth:check:any)")
      .option("--node <id>", "the node acted on, for node-scoped permissions")
      .action(async (permission: string, opts: { as?: string; node?: string }) => {
        const ctx = cli();
        const d = await ctx
          .client(AccessService)
          .checkPermission({ permission, principal: opts.as ?? "", nodeId: opts.node ?? "" })
          .catch((err: unknown) => {
            if (err instanceof CallError && opts.as !== undefined)
              err.permission = "auth:check:any";
            throw err;
          });
        ctx.print(
          { allowed: d.allowed, reason: d.reason, roles: d.roles },
          () => `${d.allowed ? ctx.style.good("yes") : ctx.style.bad("no")} (${d.reason})\n`,
        );
        if (!d.allowed) ctx.setExitCode(EXIT.other);
      }),
    "hvctl auth can-i migration:execute",
    "hvctl auth can-i node:heartbeat --as hv07 --node hv07",
  );
  return auth;
}
