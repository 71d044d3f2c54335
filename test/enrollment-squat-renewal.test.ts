import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { createCsr } from "../src/pki/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";

/** Node enrollment and the built-in CA against a tenant admin and a short-lived certificate (found by a security probe). */
describe("enrollment and renewal hold what the cluster admin meant", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clientsOf>;
  let tenantAdmin: ReturnType<typeof clientsOf>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-enroll-squat-"));
    daemon = await startDevDaemon(dir, {
      pki: { minRenewalAgeSeconds: 0 },
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clientsOf(admin);
    await root.access.setBinding({
      principal: "t-admin",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const key = await root.access.createApiKey({
      principal: "t-admin",
      roles: ["admin"],
      tenant: "acme",
    });
    tenantAdmin = clientsOf(bearerContext(admin, key.token));
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("gives an enrolled node the node role even when a tenant admin bound its name first", async () => {
    // node-04 is the next node of a cluster of node-01..03: nothing names it yet, so a tenant may bind it.
    assert.equal(
      (
        await callOutcome(
          tenantAdmin.access.setBinding({
            principal: "node-04",
            roles: ["viewer"],
            tenant: "acme",
          }),
        )
      ).code,
      0,
      "setup: the squat is accepted (documented limit: unknown names are not node names yet)",
    );
    // Later the cluster admin enrolls node-04 the documented way.
    const token = await root.pki.createEnrollmentToken({ nodeName: "node-04" });
    const { csrPem, keyPem } = await createCsr("node-04");
    const issued = await root.pki.enroll({ token: token.token, csrPem });
    const node = clientsOf({ ...admin, certPem: issued.certificatePem, keyPem });
    const who = await node.access.whoAmI({});
    assert.equal(who.principal, "node-04");
    assert.ok(
      who.roles.includes("node"),
      `the enrolled node holds ${JSON.stringify(who.roles)} (tenant ${who.tenant}): enrollment skipped the node binding because a tenant had bound the name`,
    );
  });

  it("renews a short-lived certificate an operator issued without making it last longer", async () => {
    const { csrPem, keyPem } = await createCsr("contractor");
    const short = await root.pki.issueCertificate({
      commonName: "contractor",
      usage: "client",
      csrPem,
      ttlDays: 1,
    });
    const shortCert = new X509Certificate(short.certificatePem);
    const holder = clientsOf({ ...admin, certPem: short.certificatePem, keyPem });
    const next = await createCsr("contractor");
    const renewed = await holder.pki.renewCertificate({ csrPem: next.csrPem });
    const renewedCert = new X509Certificate(renewed.certificatePem);
    const life = (c: X509Certificate) => Date.parse(c.validTo) - Date.parse(c.validFrom);
    assert.ok(
      life(renewedCert) <= life(shortCert) + 60_000,
      `a 1-day certificate renewed into one valid until ${renewedCert.validTo} (was ${shortCert.validTo})`,
    );
    assert.ok(
      Date.parse(renewedCert.validTo) <= Date.parse(shortCert.validTo) + 60_000,
      "the successor ends when its predecessor did",
    );
  });
});
