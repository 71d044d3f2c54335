import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { createCsr, loadCertificateAuthority } from "../src/pki/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";

/**
 * Found by an adversarial review of the built-in CA: a renewal chain that
 * revocation does not cover whole, and a renewal that lengthens a short
 * certificate the ledger never recorded.
 */
describe("certificate lineage: revocation and renewal terms", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clientsOf>;
  const as = (certPem: string, keyPem: string) => clientsOf({ ...admin, certPem, keyPem });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-lineage-"));
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

  it("revoking the current certificate also ends the superseded one it was renewed from", async () => {
    await root.access.setBinding({ principal: "alice", roles: ["viewer"] });
    const first = await createCsr("alice");
    const c1 = await root.pki.issueCertificate({
      commonName: "alice",
      usage: "client",
      csrPem: first.csrPem,
    });
    const old = as(c1.certificatePem, first.keyPem);
    assert.equal((await callOutcome(old.nodes.listNodes({}))).code, 0);
    // alice renews; a thief kept a copy of the first certificate and its key.
    const second = await createCsr("alice");
    const c2 = await old.pki.renewCertificate({ csrPem: second.csrPem });
    const current = as(c2.certificatePem, second.keyPem);
    // The operator sees the first "superseded", the second "valid", and revokes alice's certificate.
    const listed = await root.pki.listCertificates({ subject: "alice" });
    const valid = listed.certificates.filter((c) => c.supersededBy === "" && !c.revoked);
    assert.deepEqual(
      valid.map((c) => c.serial),
      [c2.serial],
    );
    await root.pki.revokeCertificate({ serial: c2.serial, reason: "alice's laptop was stolen" });
    await eventually(async () =>
      assert.equal((await callOutcome(current.nodes.listNodes({}))).code, 16),
    );
    const thief = as(c1.certificatePem, first.keyPem);
    const outcome = await callOutcome(thief.nodes.listNodes({}));
    assert.equal(
      outcome.code,
      grpc.status.UNAUTHENTICATED,
      `the superseded certificate ${c1.serial} still authenticates alice (${JSON.stringify(outcome)}) after her current one was revoked`,
    );
  });

  it("a renewal of the chain's newest certificate made while its revocation runs is revoked too", async () => {
    type Clients = ReturnType<typeof as>;
    await root.access.setBinding({ principal: "bob", roles: ["viewer"] });
    let key = await createCsr("bob");
    let cert = await root.pki.issueCertificate({
      commonName: "bob",
      usage: "client",
      csrPem: key.csrPem,
    });
    const firstSerial = cert.serial;
    const chain: Clients[] = [as(cert.certificatePem, key.keyPem)];
    // A long chain (a node renewing for years): its revocation goes through it oldest first.
    for (let i = 0; i < 60; i++) {
      const next = await createCsr("bob");
      cert = await (chain.at(-1) as Clients).pki.renewCertificate({ csrPem: next.csrPem });
      key = next;
      chain.push(as(cert.certificatePem, key.keyPem));
    }
    const second = chain[1] as Clients;
    const newest = chain.at(-1) as Clients;
    // The operator revokes bob's first certificate; a thief holding the newest one renews it
    // the moment the revocation has started on the chain (the second one is refused).
    const revoking = root.pki.revokeCertificate({ serial: firstSerial, reason: "bob left" });
    await eventually(
      async () => assert.equal((await callOutcome(second.nodes.listNodes({}))).code, 16),
      { intervalMs: 1 },
    );
    const thiefKey = await createCsr("bob");
    const stolen = await newest.pki
      .renewCertificate({ csrPem: thiefKey.csrPem })
      .catch(() => undefined);
    await revoking;
    if (stolen === undefined) return; // the revocation reached the newest first: nothing to show
    const listed = await root.pki.listCertificates({ subject: "bob" });
    assert.deepEqual(
      listed.certificates.filter((c) => c.revoked === undefined).map((c) => c.serial),
      [],
      "a renewal made during the revocation of its chain escaped it",
    );
    const thief = as(stolen.certificatePem, thiefKey.keyPem);
    await eventually(async () =>
      assert.equal(
        (await callOutcome(thief.nodes.listNodes({}))).code,
        grpc.status.UNAUTHENTICATED,
        `${stolen.serial}, renewed while its chain was being revoked, still authenticates bob`,
      ),
    );
  });

  it("a short certificate issued outside the ledger does not renew into a longer one", async () => {
    // The cluster CA's key, used directly (as `openssl x509 -req` with it would be): a 1-day
    // certificate for a contractor that the ledger has never seen.
    const ca = await loadCertificateAuthority({
      certPem: readFileSync(join(dir, "pki", "ca.crt"), "utf8"),
      keyPem: readFileSync(join(dir, "pki", "ca.key"), "utf8"),
    });
    const short = await ca.issue({ commonName: "contractor", usage: "client", validityDays: 1 });
    const shortCert = new X509Certificate(short.certPem);
    const contractor = as(short.certPem, short.keyPem);
    const renewed = new X509Certificate(
      (await contractor.pki.renewCertificate({ csrPem: (await createCsr("contractor")).csrPem }))
        .certificatePem,
    );
    assert.ok(
      Date.parse(renewed.validTo) <= Date.parse(shortCert.validTo) + 60_000,
      `a certificate valid until ${shortCert.validTo} renewed into one valid until ${renewed.validTo}`,
    );
  });
});

describe("certificate renewal with the default minimum age", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const channels: grpc.Client[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-renew-age-"));
    daemon = await startDevDaemon(dir);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("a certificate's holder cannot grow the ledger by renewing again and again", async () => {
    const admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    const root = devClients(admin, channels);
    // A principal with no role at all, and one CSR it sends every time (nothing to compute).
    const { csrPem, keyPem } = await createCsr("nobody");
    let certPem = (
      await root.pki.issueCertificate({ commonName: "nobody", usage: "client", csrPem })
    ).certificatePem;
    let refused = { code: 0, reason: "" };
    for (let i = 0; i < 40 && refused.code === 0; i++) {
      const self = devClients({ ...admin, certPem, keyPem }, channels);
      refused = await callOutcome(
        self.pki.renewCertificate({ csrPem }).then((r) => {
          certPem = r.certificatePem;
        }),
      );
    }
    const records = (await root.pki.listCertificates({ subject: "nobody" })).certificates.length;
    assert.equal(records, 1, `40 renewals in a row left ${records} ledger records`);
    assert.deepEqual(refused, {
      code: grpc.status.FAILED_PRECONDITION,
      reason: "CERT_TOO_NEW_TO_RENEW",
    });
  });
});
