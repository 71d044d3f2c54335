import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { createManualClock } from "../core/index.js";
import { createJwtVerifier, type JwtIssuer } from "./jwt-verifier.js";

describe("createJwtVerifier tenancy", async () => {
  const clock = createManualClock(Date.now());
  const keys = await generateKeyPair("ES256", { extractable: true });
  const issuer = (extra: Partial<JwtIssuer>): JwtIssuer => ({
    issuer: "idp",
    audience: "debvisor-rpc",
    algorithms: ["ES256"],
    publicKeyPems: [],
    rolesClaim: "roles",
    clockSkewSeconds: 0,
    ...extra,
  });
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims)
      .setSubject("alice")
      .setIssuer("idp")
      .setAudience("debvisor-rpc")
      .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
      .setProtectedHeader({ alg: "ES256" })
      .sign(keys.privateKey);
  const pem = await exportSPKI(keys.publicKey);
  const tenanted = createJwtVerifier(
    [
      issuer({
        publicKeyPems: [pem],
        tenantClaim: "tenant",
        allowedTenants: ["acme", "globex"],
        allowedRoles: ["viewer", "operator"],
      }),
    ],
    clock,
  );
  const cases: [string, Record<string, unknown>, string | undefined][] = [
    ["ok-allowed-tenant-and-roles", { tenant: "acme", roles: ["viewer", "operator"] }, "acme"],
    ["fail-no-tenant-claim", { roles: ["viewer"] }, undefined],
    ["fail-empty-tenant", { tenant: "", roles: ["viewer"] }, undefined],
    ["fail-tenant-not-a-string", { tenant: ["acme"], roles: ["viewer"] }, undefined],
    ["fail-tenant-with-control-characters", { tenant: "acme\u001b[2J", roles: [] }, undefined],
    ["fail-tenant-not-allowed", { tenant: "initech", roles: ["viewer"] }, undefined],
    ["fail-role-not-allowed", { tenant: "acme", roles: ["viewer", "admin"] }, undefined],
  ];
  for (const [name, claims, tenant] of cases) {
    it(name, async () => {
      const r = await tenanted.verify(await sign(claims));
      if (tenant === undefined) assert.ok("failure" in r, "refused");
      else {
        assert.ok("identity" in r, JSON.stringify(r));
        assert.equal(r.identity.tenant, tenant);
      }
    });
  }

  it("ok-no-tenant-claim-configured: a cluster-wide issuer's tokens carry no tenant", async () => {
    const plain = createJwtVerifier([issuer({ publicKeyPems: [pem] })], clock);
    const r = await plain.verify(await sign({ tenant: "acme", roles: ["admin"] }));
    assert.ok("identity" in r);
    assert.equal(r.identity.tenant, undefined);
    assert.deepEqual(r.identity.roles, ["admin"]);
  });
});
