import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import { createCertificateAuthority, loadCertificateAuthority } from "./certificate-authority.js";

describe("certificate authority", () => {
  it("issues an ECDSA P-256 server certificate that verifies against the CA and names its SANs", async () => {
    const ca = await createCertificateAuthority({ commonName: "Unit CA" });
    const leaf = await (await loadCertificateAuthority(ca)).issue({
      commonName: "localhost",
      usage: "server",
      altNames: ["localhost", "127.0.0.1"],
    });
    const caCert = new X509Certificate(ca.certPem);
    const cert = new X509Certificate(leaf.certPem);
    assert.ok(cert.verify(caCert.publicKey), "signed by the CA");
    assert.ok(cert.checkIssued(caCert));
    assert.equal(cert.ca, false);
    assert.equal(caCert.ca, true);
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.ok(cert.checkHost("localhost"));
    assert.ok(cert.checkIP("127.0.0.1"));
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
  });

  it("issues client certificates with clientAuth only and the requested lifetime", async () => {
    const ca = await createCertificateAuthority({ commonName: "Unit CA" });
    const now = new Date("2026-01-01T00:00:00Z");
    const leaf = await (await loadCertificateAuthority(ca)).issue({
      commonName: "node-7",
      usage: "client",
      validityDays: 30,
      now,
    });
    const cert = new X509Certificate(leaf.certPem);
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"]);
    assert.match(cert.subject, /CN=node-7/);
    assert.equal(Date.parse(cert.validTo) - now.getTime(), 30 * 86_400_000);
  });

  it("can issue from a P-384 or RSA CA", async () => {
    for (const algorithm of ["ecdsa-p384", "rsa-2048"] as const) {
      const ca = await createCertificateAuthority({ commonName: `CA ${algorithm}`, algorithm });
      const leaf = await (await loadCertificateAuthority(ca)).issue({
        commonName: "x",
        usage: "client",
      });
      assert.ok(
        new X509Certificate(leaf.certPem).verify(new X509Certificate(ca.certPem).publicKey),
        algorithm,
      );
    }
  });
});
