import { Command } from "commander";
import { AccessService, type ApiKeyInfo } from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";
import { parseDuration } from "./duration.js";
import { renderTable } from "./output.js";

const when = (ts: ApiKeyInfo["created"]) =>
  ts === undefined ? "-" : new Date(Number(ts.seconds) * 1000).toISOString().replace(".000Z", "Z");

function info(k: ApiKeyInfo) {
  return {
    id: k.id,
    principal: k.principal,
    roles: k.roles,
    tenant: k.tenant,
    created: when(k.created),
    expires: when(k.expires),
    lastUsed: when(k.lastUsed),
    revoked: when(k.revoked),
    createdBy: k.createdBy,
    description: k.description,
    replacedBy: k.replacedBy,
  };
}

/** `hvctl apikey ...`: create, list, revoke and rotate API keys. */
export function apikeyCommand(cli: () => CliContext): Command {
  const apikey = new Command("apikey").description("API keys");
  const printIssued = (ctx: CliContext, key: ApiKeyInfo | undefined, token: string) => {
    if (ctx.format === "json") {
      ctx.out(`${JSON.stringify({ key: key && info(key), token }, null, 2)}\n`);
      return;
    }
    ctx.out(`${token}\n`);
    process.stderr.write(
      `API key ${key?.id} for ${key?.principal} (roles ${key?.roles.join(", ")}). The token above is shown once: store it now.\n`,
    );
  };
  apikey
    .command("create")
    .description("create a key; prints its token once")
    .requiredOption("--roles <roles>", "comma-separated roles the key grants")
    .option("--principal <name>", "the principal the key authenticates as (default: you)")
    .option("--tenant <tenant>", "confine the key to a tenant")
    .option("--ttl <duration>", "lifetime, like 90d (default: no expiry)")
    .option("--description <text>", "what the key is for")
    .action(
      async (opts: {
        roles: string;
        principal?: string;
        tenant?: string;
        ttl?: string;
        description?: string;
      }) => {
        const ctx = cli();
        const ttlMs = opts.ttl === undefined ? 0 : parseDuration("--ttl", opts.ttl);
        const r = await ctx.client(AccessService).createApiKey(
          {
            roles: opts.roles
              .split(",")
              .map((s) => s.trim())
              .filter((s) => s !== ""),
            principal: opts.principal ?? "",
            tenant: opts.tenant ?? "",
            ttlSeconds: BigInt(Math.ceil(ttlMs / 1000)),
            description: opts.description ?? "",
          },
          { timeoutMs: ctx.timeoutMs },
        );
        printIssued(ctx, r.key, r.token);
      },
    );
  apikey
    .command("list")
    .description("list keys (never their secrets)")
    .option("--principal <name>", "only this principal's keys")
    .action(async (opts: { principal?: string }) => {
      const ctx = cli();
      const r = await ctx
        .client(AccessService)
        .listApiKeys({ principal: opts.principal ?? "" }, { timeoutMs: ctx.timeoutMs });
      if (ctx.format === "json") {
        ctx.out(`${JSON.stringify(r.keys.map(info), null, 2)}\n`);
        return;
      }
      ctx.out(
        renderTable(
          ["ID", "PRINCIPAL", "ROLES", "TENANT", "EXPIRES", "LAST USED", "STATE"],
          r.keys.map((k) => [
            k.id,
            k.principal,
            k.roles.join(","),
            k.tenant || "-",
            when(k.expires),
            when(k.lastUsed),
            k.revoked !== undefined
              ? "revoked"
              : k.replacedBy !== ""
                ? `rotated to ${k.replacedBy}`
                : "active",
          ]),
        ),
      );
    });
  apikey
    .command("revoke")
    .description("revoke a key at once")
    .argument("<id>", "the key id (dvk_<id>_...)")
    .action(async (id: string) => {
      const ctx = cli();
      const k = await ctx.client(AccessService).revokeApiKey({ id }, { timeoutMs: ctx.timeoutMs });
      ctx.out(
        ctx.format === "json" ? `${JSON.stringify(info(k), null, 2)}\n` : `revoked ${k.id}\n`,
      );
    });
  apikey
    .command("rotate")
    .description("issue a successor; the old key keeps working for the grace period")
    .argument("<id>", "the key id")
    .option("--grace <duration>", "how long the old key keeps working (default: the server's, 1d)")
    .action(async (id: string, opts: { grace?: string }) => {
      const ctx = cli();
      const graceMs = opts.grace === undefined ? 0 : parseDuration("--grace", opts.grace);
      const r = await ctx
        .client(AccessService)
        .rotateApiKey(
          { id, graceSeconds: BigInt(Math.ceil(graceMs / 1000)) },
          { timeoutMs: ctx.timeoutMs },
        );
      printIssued(ctx, r.key, r.token);
    });
  return apikey;
}
