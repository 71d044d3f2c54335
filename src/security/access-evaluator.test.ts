import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Principal } from "../core/index.js";
import {
  assertCanActAs,
  createAccessPolicy,
  decide,
  decideIn,
  rolesIn,
  rolesOf,
} from "./access-evaluator.js";

const policy = createAccessPolicy({
  bindings: [
    { principal: "split", roles: ["viewer"], tenant: "acme" },
    { principal: "split", roles: ["operator"], tenant: "globex" },
    { principal: "ops", roles: ["operator"] },
    { principal: "ops", roles: ["viewer"], tenant: "acme" },
    { principal: "acme-admin", roles: ["admin", "operator"], tenant: "acme" },
    { principal: "globex-dev", roles: ["developer"], tenant: "globex" },
    { principal: "node-01", roles: ["node"] },
  ],
});
const cert = (id: string): Principal => ({ id, method: "mtls", roles: [] });

describe("rolesIn (RulesFor(user, tenant))", () => {
  it("ok-uses only the bindings of the tenant asked about, plus cluster-wide ones", () => {
    assert.deepEqual(rolesIn(policy, cert("split"), "acme"), ["viewer"]);
    assert.deepEqual(rolesIn(policy, cert("split"), "globex"), ["operator"]);
    assert.deepEqual(rolesIn(policy, cert("split"), undefined), []);
    assert.deepEqual(rolesIn(policy, cert("ops"), "globex"), ["operator"]);
    assert.deepEqual(rolesIn(policy, cert("ops"), "acme"), ["operator", "viewer"]);
  });

  it("fail-gives a confined credential nothing outside its tenant", () => {
    const key: Principal = { id: "ops", method: "apikey", roles: ["viewer"], tenant: "acme" };
    assert.deepEqual(rolesIn(policy, key, undefined), []);
    assert.deepEqual(rolesIn(policy, key, "globex"), []);
    assert.deepEqual(rolesIn(policy, key, "acme"), ["operator", "viewer"]);
  });
});

describe("decide and decideIn", () => {
  it("ok-a viewer in one tenant and operator in another is each in its own tenant", () => {
    assert.equal(decideIn(policy, cert("split"), "migration:execute", {}, "acme").allowed, false);
    assert.equal(decideIn(policy, cert("split"), "migration:execute", {}, "globex").allowed, true);
    assert.equal(decide(policy, cert("split"), "migration:execute").tenant, "globex");
  });

  it("ok-a cluster-wide operator with a tenant binding stays cluster-wide", () => {
    const d = decide(policy, cert("ops"), "node:cordon");
    assert.equal(d.allowed, true);
    assert.equal(d.tenant, undefined);
    assert.equal(rolesOf(policy, cert("ops")).tenant, undefined);
  });

  it("fail-the node role only for the node's own id", () => {
    assert.equal(
      decideIn(policy, cert("node-01"), "node:heartbeat", { nodeId: "node-02" }, undefined).allowed,
      false,
    );
    assert.equal(
      decideIn(policy, cert("node-01"), "node:heartbeat", { nodeId: "node-01" }, undefined).allowed,
      true,
    );
  });

  it("fail-the node role's own id is compared without regard to case", () => {
    // A node certificate `Node01` reports for `node01`: one node, as in the inventory.
    const mixed = createAccessPolicy({ bindings: [{ principal: "Node01", roles: ["node"] }] });
    const heartbeat = (nodeId: string) =>
      decideIn(mixed, cert("Node01"), "node:heartbeat", { nodeId }, undefined).allowed;
    assert.equal(heartbeat("node01"), true);
    assert.equal(heartbeat("NODE01"), true);
    assert.equal(heartbeat("node02"), false);
  });
});

describe("assertCanActAs", () => {
  const admin = cert("acme-admin");
  const refused = (target: string, facts = {}) =>
    assert.throws(() => assertCanActAs(policy, admin, target, ["viewer"], "acme", facts), {
      reason: "ESCALATION_DENIED",
    });
  it("ok-a tenant admin acts for a new principal, or one of its tenant alone", () => {
    assertCanActAs(policy, admin, "fresh", ["viewer"], "acme");
    assertCanActAs(policy, admin, "acme-user", ["viewer"], "acme", { keyTenants: ["acme"] });
  });
  it("fail-a tenant admin never acts for cluster-wide identities, nodes or other tenants' principals", () => {
    for (const t of ["admin", "system:reconciler", "ops", "node-01", "globex-dev", "split"])
      refused(t);
    refused("worker-7", { nodeName: true });
    refused("keyed", { keyTenants: ["globex"] });
    refused("keyed", { keyTenants: [""] });
  });
  it("fail-a tenant admin never grants cluster-wide", () => {
    assert.throws(() => assertCanActAs(policy, admin, "fresh", ["viewer"], undefined), {
      reason: "ESCALATION_DENIED",
    });
  });
  it("ok-a cluster-wide holder of everything the target holds may act for it", () => {
    const root: Principal = { id: "root", method: "mtls", roles: ["admin", "operator"] };
    assertCanActAs(policy, root, "ops", ["viewer"], undefined);
    assertCanActAs(policy, root, "split", [], undefined);
  });
});
