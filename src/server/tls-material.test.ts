import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createCertificateAuthority, loadCertificateAuthority } from "../pki/index.js";
import { ConfigError } from "./config-loader.js";
import { readTlsMaterial } from "./tls-material.js";

async function files(
  options: { issuedDaysAgo?: number; validityDays?: number; swapKey?: boolean } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "dv-tls-"));
  const ca = await createCertificateAuthority({
    commonName: "CA",
    now: new Date(Date.now() - 400 * 86_400_000),
  });
  const issuer = await loadCertificateAuthority(ca);
  const now = new Date(Date.now() - (options.issuedDaysAgo ?? 0) * 86_400_000);
  const leaf = await issuer.issue({
    commonName: "localhost",
    usage: "server",
    validityDays: options.validityDays ?? 30,
    now,
  });
  const other = await issuer.issue({ commonName: "other", usage: "server" });
  const paths = {
    cert: join(dir, "cert.pem"),
    key: join(dir, "key.pem"),
    clientCa: join(dir, "ca.pem"),
  };
  writeFileSync(paths.cert, leaf.certPem);
  writeFileSync(paths.key, options.swapKey ? other.keyPem : leaf.keyPem);
  writeFileSync(paths.clientCa, ca.certPem);
  return paths;
}

const failsWith = (pattern: RegExp) => (e: unknown) =>
  e instanceof ConfigError && pattern.test(e.message);

describe("readTlsMaterial", () => {
  it("reads a valid certificate, key and client CA and reports the expiry", async () => {
    const paths = await files();
    const m = readTlsMaterial(paths);
    assert.match(m.certPem, /BEGIN CERTIFICATE/);
    assert.ok((m.notAfter ?? 0) > Date.now() + 29 * 86_400_000);
  });

  it("refuses an expired server certificate and names the file", async () => {
    const paths = await files({ issuedDaysAgo: 40, validityDays: 30 });
    assert.throws(
      () => readTlsMaterial(paths),
      failsWith(/^tls\.cert: certificate expired on .*cert\.pem$/),
    );
  });

  it("refuses a key that does not belong to the certificate", async () => {
    const paths = await files({ swapKey: true });
    assert.throws(
      () => readTlsMaterial(paths),
      failsWith(/^tls: certificate, key or client CA unusable/),
    );
  });

  it("names the missing file and its key", async () => {
    const paths = await files();
    assert.throws(
      () => readTlsMaterial({ ...paths, clientCa: "/nonexistent/ca.pem" }),
      failsWith(/^tls\.clientCa: file not found: \/nonexistent\/ca\.pem/),
    );
  });
});
