import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { HVCTL_BIN, runProcess } from "./helpers/daemon-process.js";

const RPCD = join(HVCTL_BIN, "..", "debvisor-rpcd.js");

describe("debvisor-rpcd ca init", () => {
  for (const [alg, check] of [
    [
      "ecdsa-p256",
      (c: X509Certificate) => c.publicKey.asymmetricKeyDetails?.namedCurve === "prime256v1",
    ],
    ["rsa-2048", (c: X509Certificate) => c.publicKey.asymmetricKeyDetails?.modulusLength === 2048],
  ] as const) {
    it(`creates a ${alg} CA with its key 0600, and will not overwrite it`, async () => {
      const out = join(mkdtempSync(join(tmpdir(), "dv-ca-")), "ca");
      const r = await runProcess(process.execPath, [
        RPCD,
        "ca",
        "init",
        "--out",
        out,
        "--algorithm",
        alg,
        "--days",
        "365",
        "--cn",
        "Test Root",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /fingerprint sha256:[0-9a-f]{64}/);
      const cert = new X509Certificate(readFileSync(join(out, "ca.crt")));
      assert.equal(cert.ca, true);
      assert.equal(cert.subject, "CN=Test Root");
      assert.ok(check(cert));
      const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
      assert.ok(days > 364.9 && days < 365.1);
      assert.equal(statSync(join(out, "ca.key")).mode & 0o777, 0o600);
      const again = await runProcess(process.execPath, [RPCD, "ca", "init", "--out", out]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already holds a CA/);
    });
  }
});
