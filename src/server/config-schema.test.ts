import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "./config-loader.js";
import { configSchema } from "./config-schema.js";

const doc = readFileSync(new URL("../../../docs/configuration.md", import.meta.url), "utf8");
/** Table rows of the doc as trimmed cells. */
const rows = doc
  .split("\n")
  .filter((l) => l.startsWith("|"))
  .map((l) =>
    l
      .split("|")
      .slice(1, -1)
      .map((c) => c.trim()),
  );

/** Every leaf key path of the schema, found by walking zod's definitions. */
function leafPaths(schema: unknown, prefix = ""): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking zod's internal definition tree.
  let s = schema as any;
  while (s?.def?.innerType !== undefined || s?.def?.out !== undefined)
    s = s.def.innerType ?? s.def.out;
  if (s?.def?.type === "array" && s.def.element?.def?.type === "object") {
    return [prefix, ...leafPaths(s.def.element, `${prefix}[]`)];
  }
  if (s?.def?.type !== "object") return [prefix];
  return Object.entries(s.def.shape as Record<string, unknown>).flatMap(([k, v]) =>
    leafPaths(v, prefix === "" ? k : `${prefix}.${k}`),
  );
}

describe("docs/configuration.md", () => {
  const documented = new Set(rows.map((r) => (r[0] ?? "").replace(/`/g, "")));
  const paths = leafPaths(configSchema);

  it("documents every configuration key", () => {
    assert.ok(paths.length > 25);
    const missing = paths.filter((p) => !documented.has(p));
    assert.deepEqual(missing, []);
  });

  it("states each default the schema applies", () => {
    const defaults = parseConfig({}) as unknown as Record<string, Record<string, unknown>>;
    for (const p of paths) {
      const value = p
        .split(".")
        .reduce<unknown>((node, k) => (node as Record<string, unknown> | undefined)?.[k], defaults);
      if (
        value === undefined ||
        p.includes("[]") ||
        (typeof value === "object" && !Array.isArray(value))
      )
        continue;
      const shown = Array.isArray(value)
        ? value.length === 0
          ? "[]"
          : value.join(", ")
        : String(value);
      const row = rows.find((r) => r[0] === `\`${p}\``);
      assert.equal(row?.[1], `\`${shown}\``, `${p}: default ${shown} not stated`);
    }
  });

  it("has an example that the schema accepts", () => {
    const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
    const c = parseConfig(parseYaml(example));
    assert.equal(c.listen, "0.0.0.0:7443");
  });
});

describe("benchmark settings", () => {
  it("refuses to leave out rate limits or authorization unless listening on loopback", () => {
    for (const key of ["skipRateLimit", "skipAuthorization"]) {
      for (const listen of ["0.0.0.0:7443", "10.0.0.5:7443", "[::]:7443", "hv1.example:7443"]) {
        assert.throws(
          () => parseConfig({ listen, benchmark: { [key]: true } }),
          new RegExp(
            `^ConfigError: benchmark\\.${key}: a benchmark setting, refused unless listen is a loopback address$`,
          ),
          `${key} on ${listen}`,
        );
      }
      for (const listen of ["127.0.0.1:0", "127.1.2.3:7443", "[::1]:7443", "localhost:7443"]) {
        assert.equal(
          parseConfig({ listen, benchmark: { [key]: true } }).benchmark[key as "skipRateLimit"],
          true,
        );
      }
    }
  });

  it("keeps every stage by default", () => {
    assert.deepEqual(parseConfig({ listen: "0.0.0.0:7443" }).benchmark, {
      skipRateLimit: false,
      skipAuthorization: false,
    });
  });
});

describe("auth.jwt.issuers", () => {
  it("refuses allowedTenants without a tenantClaim to check them against", () => {
    const issuer = { publicKeys: ["/etc/debvisor/idp.pem"], allowedTenants: ["acme"] };
    assert.throws(
      () => parseConfig({ auth: { jwt: { issuers: [issuer] } } }),
      /auth\.jwt\.issuers\.0\.allowedTenants: allowedTenants needs tenantClaim/,
    );
    const ok = parseConfig({ auth: { jwt: { issuers: [{ ...issuer, tenantClaim: "tenant" }] } } });
    assert.deepEqual(ok.auth.jwt.issuers[0]?.allowedTenants, ["acme"]);
  });
});

describe("storage.replication.policies", () => {
  it("accepts named policies and refuses a name whose policy does not parse", () => {
    const c = parseConfig({
      storage: { replication: { policies: { gold: "interval=15m keep=96" } } },
    });
    assert.equal(c.storage.replication.policies.gold, "interval=15m keep=96");
    assert.throws(
      () => parseConfig({ storage: { replication: { policies: { bad: "interval=5s" } } } }),
      /storage\.replication\.policies\.bad: policy: interval/,
    );
  });
});

describe("cluster.selfFenceWindowMs", () => {
  it("ok-derives a window the fence delay exceeds by its margin, for every fence delay", () => {
    for (const fenceDelayMs of [1000, 1499, 2000, 5000, 60_000, 86_400_000]) {
      const c = parseConfig({ cluster: { fenceDelayMs } });
      assert.equal(c.cluster.selfFenceWindowMs, undefined, "derived, not stored");
    }
  });

  it("fail-refuses a fence delay that does not exceed the window plus a margin", () => {
    assert.throws(
      () => parseConfig({ cluster: { fenceDelayMs: 60_000, selfFenceWindowMs: 55_000 } }),
      /^ConfigError: cluster\.fenceDelayMs: must be at least the self-fence window \(55000 ms\) plus a margin of 11000 ms, or a VM could run twice$/,
    );
    assert.throws(
      () => parseConfig({ cluster: { fenceDelayMs: 2000, selfFenceWindowMs: 1600 } }),
      /cluster\.fenceDelayMs: must be at least the self-fence window \(1600 ms\) plus a margin of 500 ms/,
    );
    const ok = parseConfig({ cluster: { fenceDelayMs: 60_000, selfFenceWindowMs: 50_000 } });
    assert.equal(ok.cluster.selfFenceWindowMs, 50_000);
  });
});

describe("pki renewal settings", () => {
  it("fail-refuses a minimum renewal age no agent could ever reach before its certificate expires", () => {
    const bad = configSchema.safeParse({ pki: { certificateDays: 1, minRenewalAgeSeconds: 9000 } });
    assert.equal(bad.success, false);
    assert.match(JSON.stringify(bad.error?.issues), /under a tenth of certificateDays/);
    const ok = configSchema.safeParse({ pki: { certificateDays: 1, minRenewalAgeSeconds: 8000 } });
    assert.equal(ok.success, true, JSON.stringify(ok.error?.issues));
  });
});
