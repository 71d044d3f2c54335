/**
 * Tenants whose names are not plain words ("Acme Corp"): every place that
 * names a tenant takes the same names (core isTenantName), and every place
 * that keys by one encodes it (core tenantKeySegment). Found by an
 * adversarial review of stored bindings taking such names (bdf9c1a).
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import {
  createInventory,
  createReplicationJobs,
  createTargetResolvers,
  scopedJobId,
  shownJobId,
  tenantOfJobId,
} from "../src/cluster/index.js";
import {
  type CallContext,
  createManualClock,
  isTenantName,
  silentLogger,
  systemClock,
  validateMessage,
} from "../src/core/index.js";
import { BindingRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { ReplicationJobRecordSchema } from "../src/gen/debvisor/store/v1/storage_records_pb.js";
import {
  CreateApiKeyRequestSchema,
  ListBindingsRequestSchema,
  type ListBindingsResponse,
} from "../src/gen/debvisor/v1/access_pb.js";
import { SetVmTenantRequestSchema } from "../src/gen/debvisor/v1/vm_pb.js";
import {
  createAccessPolicy,
  createAccessService,
  createJwtVerifier,
  loadStoredBindings,
  type StoredBindings,
} from "../src/security/index.js";
import { parseConfig } from "../src/server/index.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../src/store/index.js";
import { eventually } from "./helpers/eventually.js";

const newStore = () =>
  createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-tenant-names-")), "s.db"),
    logger: silentLogger,
  });

/** Waits until the mirror shows `want` (principal@tenant:roles, sorted). */
async function settle(b: StoredBindings, want: string[]) {
  const shown = () =>
    b
      .all()
      .map((r) => `${r.principal}@${r.tenant || "*"}:${r.roles.join("+")}`)
      .sort();
  // Bounded at ~10 s (not 2 s): on a loaded machine the mirror's watch can take seconds.
  for (let i = 0; i < 500 && JSON.stringify(shown()) !== JSON.stringify(want); i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(shown(), want);
}

describe("a tenant whose name is not a plain word", () => {
  let store: KvStore;
  let inventory: ReturnType<typeof createInventory>;
  before(() => {
    store = newStore();
    inventory = createInventory({ store, clock: systemClock });
  });
  after(async () => {
    inventory.close();
    await store.close();
  });

  // A job id is a store key (printable ASCII only): the tenant in it is encoded.
  it("a principal bound in 'Acme Corp' and 'acme' still finds acme's replication job", async () => {
    await store.put(
      `replication/jobs/${scopedJobId("acme", "j1")}`,
      encodeMessage(
        ReplicationJobRecordSchema,
        create(ReplicationJobRecordSchema, { jobId: "acme:j1" }),
      ),
    );
    const resolve = createTargetResolvers({ inventory, store })["replication-job"];
    assert.ok(resolve);
    // The caller's tenants as the authorization stage passes them (sorted: "Acme Corp" first).
    const tenants = await resolve("j1", AbortSignal.timeout(5000), ["Acme Corp", "acme"]);
    assert.deepEqual(
      tenants,
      ["acme"],
      "the job is acme's; answering undefined is REPLICATION_JOB_NOT_FOUND",
    );
  });

  it("a caller confined to 'Acme Corp' can look up (and so plan) its own replication job ids", async () => {
    const jobs = createReplicationJobs(store);
    // visibleJob / PlanZfsReplication do exactly this for ctx.tenant; a TypeError here is INTERNAL.
    assert.equal(await jobs.get(scopedJobId("Acme Corp", "j1")), undefined);
  });

  // (A run's events are filed under its dataset's owner, not the id's tenant: replication-job-ids-tenants.test.ts.)
  it("keeps the job ids of printable names as they were, and encodes the rest", async () => {
    // "AT&T:j2" was a valid key and stays the id; "Acme Corp" never was; "~x" reads like an encoding.
    await store.put(
      "replication/jobs/AT&T:j2",
      encodeMessage(
        ReplicationJobRecordSchema,
        create(ReplicationJobRecordSchema, { jobId: "AT&T:j2" }),
      ),
    );
    const ids = {
      "AT&T": "AT&T:j2",
      "Acme Corp": "~QWNtZSBDb3Jw:j2",
      "~QWNtZSBDb3Jw": "~flFXTnRaU0JEYjNKdw:j2",
    };
    for (const [tenant, id] of Object.entries(ids)) {
      assert.equal(scopedJobId(tenant, "j2"), id);
      assert.equal(tenantOfJobId(id), tenant);
      assert.equal(shownJobId(id, tenant), "j2");
    }
    const resolve = createTargetResolvers({ inventory, store })["replication-job"];
    assert.deepEqual(await resolve?.("j2", AbortSignal.timeout(5000), ["AT&T"]), ["AT&T"]);
  });

  // A token may name any tenant an issuer is allowed to name.
  it("an issuer allowed to name 'Acme Corp' can log a user into it (or the config refuses it)", async () => {
    const cfg = parseConfig({
      auth: {
        jwt: {
          issuers: [
            {
              issuer: "idp",
              publicKeys: ["/dev/null"],
              tenantClaim: "tenant",
              allowedTenants: ["Acme Corp"],
            },
          ],
        },
      },
    });
    assert.deepEqual(cfg.auth.jwt.issuers[0]?.allowedTenants, ["Acme Corp"], "config accepted it");
    const clock = createManualClock(Date.now());
    const keys = await generateKeyPair("ES256", { extractable: true });
    const verifier = createJwtVerifier(
      [
        {
          issuer: "idp",
          audience: "debvisor-rpc",
          algorithms: ["ES256"],
          publicKeyPems: [await exportSPKI(keys.publicKey)],
          rolesClaim: "roles",
          tenantClaim: "tenant",
          allowedTenants: ["Acme Corp"],
          clockSkewSeconds: 0,
        },
      ],
      clock,
    );
    const token = await new SignJWT({ tenant: "Acme Corp", roles: ["viewer"] })
      .setSubject("alice")
      .setIssuer("idp")
      .setAudience("debvisor-rpc")
      .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
      .setProtectedHeader({ alg: "ES256" })
      .sign(keys.privateKey);
    const r = await verifier.verify(token);
    assert.ok("identity" in r, JSON.stringify(r));
  });
});

describe("one rule for tenant names", () => {
  let store: KvStore;
  let bindings: StoredBindings;
  before(async () => {
    store = newStore();
    bindings = await loadStoredBindings(store, systemClock, silentLogger);
  });
  after(async () => {
    bindings.close();
    await store.close();
  });

  it("refuses a tenant with a control character everywhere: requests, config, stored bindings", async () => {
    const tenant = "acme\tprod";
    const hint = [
      {
        field: "tenant",
        description:
          "must be without white space at either end or characters that hide or reorder text",
      },
    ];
    assert.deepEqual(
      validateMessage(
        SetVmTenantRequestSchema,
        create(SetVmTenantRequestSchema, { vmId: "vm-1", tenant }),
      ),
      hint,
    );
    assert.deepEqual(
      validateMessage(
        CreateApiKeyRequestSchema,
        create(CreateApiKeyRequestSchema, { roles: ["viewer"], tenant }),
      ),
      hint,
    );
    assert.deepEqual(
      validateMessage(
        SetVmTenantRequestSchema,
        create(SetVmTenantRequestSchema, { vmId: "vm-1", tenant: "Acme Corp" }),
      ),
      [],
    );
    assert.throws(
      () => parseConfig({ rbac: { bindings: [{ principal: "p", roles: ["viewer"], tenant }] } }),
      /rbac\.bindings\.0\.tenant: a tenant is 1 to 64 characters/,
    );
    await assert.rejects(bindings.set({ principal: "p", roles: ["viewer"], tenant }, "t"), {
      reason: "INVALID_ARGUMENT",
    });
  });

  // Look-alike tenants: bidi overrides and invisible characters (principal names refuse them too).
  it("takes the same names in requests (the protos' pattern) as isTenantName, joiners of scripts and emoji included", () => {
    const good = [
      "Acme Corp",
      "ä",
      "株式会社",
      "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", // Persian with a zero-width non-joiner
      "\u{1f469}\u200d\u{1f4bb} team", // an emoji joined with ZWJ
      "\u{1f3f4}\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}", // a flag of tag characters
      "x".repeat(64),
    ];
    const bad = [
      "acme ",
      " acme",
      "acme\u00a0",
      "ac\u2028me",
      "ac\u3164me",
      "ac\u034fme",
      "acme\u202e",
      "ac\u200bme",
      "acme\tprod",
      "x\ud800",
      "x".repeat(65),
    ];
    for (const [names, ok] of [
      [good, true],
      [bad, false],
    ] as const)
      for (const tenant of names) {
        assert.equal(isTenantName(tenant), ok, JSON.stringify(tenant));
        const errors = validateMessage(
          SetVmTenantRequestSchema,
          create(SetVmTenantRequestSchema, { vmId: "vm-1", tenant }),
        );
        assert.equal(
          errors.length === 0,
          ok,
          `${JSON.stringify(tenant)}: ${JSON.stringify(errors)}`,
        );
      }
  });

  it("a tenant name with a bidi override or an invisible character is refused", async () => {
    for (const tenant of ["acme\u202e", "acme\u200b", "\u2066acme\u2069"])
      await assert.rejects(bindings.set({ principal: "p", roles: ["viewer"], tenant }, "t"), {
        reason: "INVALID_ARGUMENT",
      });
  });

  it("refuses a name with a lone surrogate, which would share its encoding with another", async () => {
    for (const tenant of ["x\ud800", "x\udbff"])
      await assert.rejects(bindings.set({ principal: "s", roles: ["viewer"], tenant }, "t"), {
        reason: "INVALID_ARGUMENT",
      });
  });
});

describe("binding keys against earlier records rbac/bindings/<principal>", () => {
  /** Runs `fn` on bindings loaded over an earlier version's record of principal acme/bob (cluster-wide admin). */
  async function overLegacyAcmeBob(fn: (bindings: StoredBindings) => Promise<void>) {
    const store = newStore();
    await store.put(
      "rbac/bindings/acme/bob",
      encodeMessage(
        BindingRecordSchema,
        create(BindingRecordSchema, { principal: "acme/bob", roles: ["admin"], tenant: "" }),
      ),
    );
    const bindings = await loadStoredBindings(store, systemClock, silentLogger);
    try {
      await settle(bindings, ["acme/bob@*:admin"]);
      await fn(bindings);
    } finally {
      bindings.close();
      await store.close();
    }
  }

  it("does not replace the earlier record of 'acme/bob' with bob's binding in acme until it has moved", () =>
    overLegacyAcmeBob(async (bindings) => {
      // What a tenant admin of acme may do: bob is bound nowhere else.
      await assert.rejects(
        bindings.set({ principal: "bob", roles: ["viewer"], tenant: "acme" }, "acme-admin"),
        { reason: "CONFLICT", message: /set that principal's binding again first/ },
      );
      await settle(bindings, ["acme/bob@*:admin"]);
      // Set again, acme/bob's binding moves to its own key, and bob's has room.
      await bindings.set({ principal: "acme/bob", roles: ["admin"] }, "root");
      // Once the copy has seen the earlier record go.
      await eventually(() =>
        bindings.set({ principal: "bob", roles: ["viewer"], tenant: "acme" }, "acme-admin"),
      );
      await settle(bindings, ["acme/bob@*:admin", "bob@acme:viewer"]);
    }));

  it("removing bob's (absent) binding in acme does not remove another principal's", () =>
    overLegacyAcmeBob(async (bindings) => {
      await assert.rejects(bindings.remove("bob", "acme"), { reason: "BINDING_NOT_FOUND" });
      await settle(bindings, ["acme/bob@*:admin"]);
    }));
});

describe("ListBindings' source label", () => {
  it("a config binding is labelled config even when a stored one joins to the same 'tenant/principal'", async () => {
    const store = newStore();
    const stored = await loadStoredBindings(store, systemClock, silentLogger);
    try {
      // Stored: principal c in tenant "a/b" (a tenant name the commit newly allows).
      await stored.set({ principal: "c", roles: ["viewer"], tenant: "a/b" }, "t");
      await settle(stored, ["c@a/b:viewer"]);
      // Config: principal "b/c" in tenant "a". `${tenant}/${principal}` is "a/b/c" for both.
      const policy = createAccessPolicy({
        bindings: [
          { principal: "b/c", roles: ["viewer"], tenant: "a" },
          ...stored.all().map((b) => ({
            principal: b.principal,
            roles: b.roles,
            tenant: b.tenant || undefined,
          })),
        ],
      });
      const service = createAccessService({
        policy: () => policy,
        apiKeys: {} as never,
        bindings: stored,
        roles: {} as never,
        rotationGraceMs: 1000,
      });
      const list = service.methods.find((m) => m.spec.name === "ListBindings");
      assert.ok(list);
      const ctx = {
        principal: { id: "admin", method: "mtls", roles: ["admin"] },
        scope: { tenant: undefined, clusterWide: true, canSee: () => true },
        signal: AbortSignal.timeout(5000),
      } as unknown as CallContext;
      const res = (await (
        list.handler as (r: unknown, c: CallContext) => Promise<ListBindingsResponse>
      )(create(ListBindingsRequestSchema), ctx)) as ListBindingsResponse;
      const sourceOf = (principal: string) =>
        res.bindings.find((b) => b.principal === principal)?.source;
      assert.equal(sourceOf("c"), "store");
      assert.equal(
        sourceOf("b/c"),
        "config",
        "set in the config file, not removable through the API",
      );
    } finally {
      stored.close();
      await store.close();
    }
  });
});
