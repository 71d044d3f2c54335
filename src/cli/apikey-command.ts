import { Command } from "commander";
import { AccessService, type ApiKeyInfo, ApiKeyInfoSchema } from "../gen/debvisor/v1/access_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { parseDuration, splitList } from "./duration.js";
import { withExamples } from "./help-text.js";
import { type Column, messageJson, renderColumns, tableTime } from "./output.js";

const COLUMNS: Column<ApiKeyInfo>[] = [
  { header: "ID", value: (k) => k.id },
  { header: "PRINCIPAL", value: (k) => k.principal },
  { header: "ROLES", value: (k) => k.roles.join(",") },
  { header: "TENANT", value: (k) => k.tenant || "-" },
  { header: "EXPIRES", value: (k) => tableTime(k.expires) },
  { header: "LAST USED", value: (k) => tableTime(k.lastUsed) },
  {
    header: "STATE",
    value: (k) =>
      k.revoked !== undefined
        ? "revoked"
        : k.replacedBy !== ""
          ? `rotated to ${k.replacedBy}`
          : "active",
  },
  { header: "CREATED", wide: true, value: (k) => tableTime(k.created) },
  { header: "CREATED BY", wide: true, value: (k) => k.createdBy || "-" },
  { header: "DESCRIPTION", wide: true, value: (k) => k.description || "-" },
];

/** `hvctl apikey ...`: create, list, revoke and rotate API keys. */
export function apikeyCommand(cli: () => CliContext): Command {
  const apikey = new Command("apikey").description("API keys for scripts and services");
  withExamples(
    apikey,
    "hvctl apikey list",
    "hvctl apikey create --roles viewer --principal ci --ttl 90d",
  );
  const printIssued = (ctx: CliContext, key: ApiKeyInfo | undefined, token: string) => {
    ctx.print({ key: key === undefined ? null : messageJson(ApiKeyInfoSchema, key), token }, () => {
      // The token first, then what it is: "above" must be true on a terminal, where both streams meet.
      ctx.out(`${token}\n`);
      ctx.err(
        `API key ${key?.id} for ${key?.principal} (roles ${key?.roles.join(", ")}). The token above is shown once: store it now.\n`,
      );
      return "";
    });
  };
  withExamples(
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
          const roles = splitList(opts.roles);
          if (roles.length === 0) throw new UsageError("--roles: at least one role");
          const ttlMs = opts.ttl === undefined ? 0 : parseDuration("--ttl", opts.ttl);
          const r = await ctx.client(AccessService).createApiKey({
            roles,
            principal: opts.principal ?? "",
            tenant: opts.tenant ?? "",
            ttlSeconds: BigInt(Math.ceil(ttlMs / 1000)),
            description: opts.description ?? "",
          });
          printIssued(ctx, r.key, r.token);
        },
      ),
    "hvctl apikey create --roles viewer --principal ci --ttl 90d --description 'CI dashboards'",
    "hvctl apikey create --roles operator -o json > key.json",
  );
  withExamples(
    apikey
      .command("list")
      .description("list keys (never their secrets)")
      .option("--principal <name>", "only this principal's keys")
      .action(async (opts: { principal?: string }) => {
        const ctx = cli();
        const r = await ctx.client(AccessService).listApiKeys({ principal: opts.principal ?? "" });
        ctx.print({ keys: r.keys.map((k) => messageJson(ApiKeyInfoSchema, k)) }, () =>
          renderColumns(COLUMNS, r.keys, ctx.wide),
        );
      }),
    "hvctl apikey list",
    "hvctl apikey list --principal ci -o wide",
  );
  withExamples(
    apikey
      .command("revoke")
      .description("revoke a key at once")
      .argument("<id>", "the key id (dvk_<id>_...)")
      .action(async (id: string) => {
        const ctx = cli();
        const k = await ctx.client(AccessService).revokeApiKey({ id });
        ctx.print(messageJson(ApiKeyInfoSchema, k), () => `revoked ${k.id}\n`);
      }),
    "hvctl apikey revoke 0123456789abcdef",
  );
  withExamples(
    apikey
      .command("rotate")
      .description("issue a successor; the old key keeps working for the grace period")
      .argument("<id>", "the key id")
      .option(
        "--grace <duration>",
        "how long the old key keeps working (default: the server's, 1d)",
      )
      .action(async (id: string, opts: { grace?: string }) => {
        const ctx = cli();
        const graceMs = opts.grace === undefined ? 0 : parseDuration("--grace", opts.grace);
        const r = await ctx
          .client(AccessService)
          .rotateApiKey({ id, graceSeconds: BigInt(Math.ceil(graceMs / 1000)) });
        printIssued(ctx, r.key, r.token);
      }),
    "hvctl apikey rotate 0123456789abcdef --grace 1h",
  );
  return apikey;
}
