import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { BindingRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../store/index.js";
import { loadStoredBindings, type StoredBindings } from "./stored-bindings.js";

describe("stored bindings", () => {
  let store: KvStore;
  let bindings: StoredBindings;
  const shown = () =>
    bindings
      .all()
      .map((b) => `${b.tenant || "*"}/${b.principal}:${b.roles.join("+")}`)
      .sort();
  const settle = async (want: string[]) => {
    // The store's watch brings the change; a loaded machine may take seconds.
    const until = Date.now() + 20_000;
    while (JSON.stringify(shown()) !== JSON.stringify(want) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(shown(), want);
  };

  before(async () => {
    store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-bindings-")), "s.db"),
      logger: silentLogger,
    });
    // Records of an earlier version: one per principal, under rbac/bindings/<principal>.
    const legacy = (principal: string, roles: string[], tenant: string) =>
      store.put(
        `rbac/bindings/${principal}`,
        encodeMessage(
          BindingRecordSchema,
          create(BindingRecordSchema, { principal, roles, tenant }),
        ),
      );
    await legacy("old-ops", ["operator"], "");
    await legacy("old-acme", ["viewer"], "acme");
    bindings = await loadStoredBindings(store, systemClock, silentLogger);
  });
  after(async () => {
    bindings.close();
    await store.close();
  });

  it("reads an earlier version's records as the binding of the tenant they name", () => {
    assert.deepEqual(shown(), ["*/old-ops:operator", "acme/old-acme:viewer"]);
  });

  it("keeps one binding per principal and tenant; setting one tenant's leaves the others", async () => {
    await bindings.set({ principal: "old-acme", roles: ["operator"], tenant: "globex" }, "t");
    await bindings.set({ principal: "old-acme", roles: ["developer"], tenant: "acme" }, "t");
    await settle(["*/old-ops:operator", "acme/old-acme:developer", "globex/old-acme:operator"]);
    assert.equal(await store.get("rbac/bindings/old-acme"), undefined, "old record replaced");
  });

  it("removes one tenant's binding only, and says BINDING_NOT_FOUND for one that is not there", async () => {
    await bindings.remove("old-acme", "globex");
    await bindings.remove("old-ops", undefined);
    await settle(["acme/old-acme:developer"]);
    await assert.rejects(bindings.remove("old-acme", "globex"), { reason: "BINDING_NOT_FOUND" });
  });

  it("binds any tenant a config binding can name, each under a key of its own", async () => {
    // Not a key segment as they are: a space, a slash, a name like the cluster-wide segment's.
    for (const tenant of ["Acme Corp", "a/b", "_cluster", "ä"])
      await bindings.set({ principal: "p", roles: ["viewer"], tenant }, "t");
    await settle([
      "Acme Corp/p:viewer",
      "_cluster/p:viewer",
      "a/b/p:viewer",
      "acme/old-acme:developer",
      "ä/p:viewer",
    ]);
    const keys = (await store.range("rbac/bindings/")).kvs.map((kv) => kv.key);
    for (const k of keys) assert.match(k, /^[\x21-\x7e]+$/, "printable ASCII");
    assert.equal(new Set(keys).size, 5);
    await bindings.remove("p", "a/b");
    await bindings.remove("p", "_cluster");
    await settle(["Acme Corp/p:viewer", "acme/old-acme:developer", "ä/p:viewer"]);
  });

  it("refuses a tenant name with a control character, and one over 64 characters", async () => {
    for (const tenant of ["acme\nadmin", "x".repeat(65)])
      await assert.rejects(bindings.set({ principal: "p", roles: ["viewer"], tenant }, "t"), {
        reason: "INVALID_ARGUMENT",
      });
  });
});
