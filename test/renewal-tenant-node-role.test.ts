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

/**
 * Found by an adversarial review of ce6f161 ("renewal keeps an operator's end"): a certificate
 * renews for a full term when its name is a node's, and `nodeNamed` counts
 * a binding to the `node` role in ANY tenant. A tenant admin holding
 * `operator` in its tenant may bind the node role there (operator grants
 * node:*), so it can turn any principal of its tenant, itself included,
 * into a "node name" and make a 1-day certificate the cluster admin issued
 * renew into a 30-day one, again and again.
 */
describe("a tenant binding to the node role does not lengthen a short certificate", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clientsOf>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-node-renew-"));
    daemon = await startDevDaemon(dir, {
      pki: { minRenewalAgeSeconds: 0 },
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clientsOf(admin);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const life = (c: X509Certificate) => Date.parse(c.validTo) - Date.parse(c.validFrom);

  it("a tenant admin with a 1-day certificate binds itself to 'node' in its tenant and renews for 30 days", async () => {
    // The cluster admin makes a temporary acme admin: bound in acme only, a certificate for a day.
    await root.access.setBinding({
      principal: "temp-admin",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const { csrPem, keyPem } = await createCsr("temp-admin");
    const short = await root.pki.issueCertificate({
      commonName: "temp-admin",
      usage: "client",
      csrPem,
      ttlDays: 1,
    });
    const shortCert = new X509Certificate(short.certificatePem);
    const temp = clientsOf({ ...admin, certPem: short.certificatePem, keyPem });

    // Within acme, it binds itself to the node role (it holds node:* there through operator).
    const bound = await callOutcome(
      temp.access.setBinding({ principal: "temp-admin", roles: ["node"], tenant: "acme" }),
    );
    const next = await createCsr("temp-admin");
    const renewed = new X509Certificate(
      (await temp.pki.renewCertificate({ csrPem: next.csrPem })).certificatePem,
    );
    assert.ok(
      Date.parse(renewed.validTo) <= Date.parse(shortCert.validTo) + 60_000 &&
        life(renewed) <= life(shortCert) + 60_000,
      `after a binding in acme to 'node' (outcome ${JSON.stringify(bound)}), a 1-day certificate ` +
        `(until ${shortCert.validTo}) renewed into one valid until ${renewed.validTo}`,
    );
  });

  it("another tenant admin can do the same for any principal of its tenant", async () => {
    await root.access.setBinding({
      principal: "acme-boss",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const boss = clientsOf(
      bearerContext(
        admin,
        (
          await root.access.createApiKey({
            principal: "acme-boss",
            roles: ["admin", "operator"],
            tenant: "acme",
          })
        ).token,
      ),
    );
    await root.access.setBinding({ principal: "intern", roles: ["viewer"], tenant: "acme" });
    const { csrPem, keyPem } = await createCsr("intern");
    const short = new X509Certificate(
      (
        await root.pki.issueCertificate({
          commonName: "intern",
          usage: "client",
          csrPem,
          ttlDays: 1,
        })
      ).certificatePem,
    );
    const bound = await callOutcome(
      boss.access.setBinding({ principal: "intern", roles: ["viewer", "node"], tenant: "acme" }),
    );
    // The intern's 1-day certificate, as the cluster admin issued it.
    const intern = clientsOf({
      ...admin,
      certPem: short.toString(),
      keyPem,
    });
    const renewed = new X509Certificate(
      (await intern.pki.renewCertificate({ csrPem: (await createCsr("intern")).csrPem }))
        .certificatePem,
    );
    assert.ok(
      Date.parse(renewed.validTo) <= Date.parse(short.validTo) + 60_000,
      `acme's admin bound the intern to 'node' in acme (outcome ${JSON.stringify(bound)}); the ` +
        `intern's 1-day certificate (until ${short.validTo}) renewed until ${renewed.validTo}`,
    );
  });
});
