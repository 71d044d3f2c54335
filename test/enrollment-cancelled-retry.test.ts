import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { enroll } from "../src/client/index.js";
import { createCsr } from "../src/pki/index.js";
import { callOutcome } from "./helpers/dev-clients.js";
import { provisionerDaemonForSuite } from "./helpers/provisioner-daemon.js";

const spkiOf = (pem: string) =>
  createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64");

/**
 * A node whose Enroll gives up (its deadline passes, the connection drops)
 * after the server spent its token: the server finishes the enrolment all
 * the same, and the node's retry with the same token and the same key gets
 * that certificate. Before, issuing and binding ran on the caller's signal:
 * about half such calls issued nothing, and the retry was "already used".
 */
describe("an enrolment the node gives up on after its token is spent", () => {
  const d = provisionerDaemonForSuite({
    pki: { enrollLimit: { ratePerSecond: 100, burst: 1000 } },
  });

  it("the retry with the same key gets one certificate, the node one binding; another key is refused", async () => {
    const root = d.clientsOf(d.admin);
    const wrong: string[] = [];
    const names: string[] = [];
    // Client deadlines of 2 to 19 ms: some end before the spend, most after it.
    for (let deadline = 2; deadline < 20; deadline++) {
      const name = `node-7${deadline}`;
      names.push(name);
      const { token } = await d.provisioner.pki.createEnrollmentToken({ nodeName: name });
      const { csrPem, keyPem } = await createCsr("x");
      const first = await callOutcome(root.pki.enroll({ token, csrPem }, { timeoutMs: deadline }));
      const retry = await root.pki.enroll({ token, csrPem }).then(
        (r) => r,
        (e: grpc.ServiceError) => e,
      );
      if (!("certificatePem" in retry)) {
        wrong.push(`${name}: first ended ${first.code}, retry refused: ${retry.details}`);
        continue;
      }
      const cert = new X509Certificate(retry.certificatePem);
      if (
        spkiOf(cert.publicKey.export({ type: "spki", format: "pem" }) as string) !== spkiOf(keyPem)
      )
        wrong.push(`${name}: the retry's certificate is not for the node's key`);
      if (!cert.subject.includes(`CN=${name}`))
        wrong.push(`${name}: certificate for ${cert.subject}`);
      const bound = (await root.access.listBindings({})).bindings.filter(
        (b) => b.principal === name && b.tenant === "",
      );
      if (bound.length !== 1 || bound[0]?.roles.filter((r) => r === "node").length !== 1)
        wrong.push(`${name}: bindings ${JSON.stringify(bound.map((b) => b.roles))}`);
      const issued = (await root.pki.listCertificates({ subject: name })).certificates;
      if (issued.length !== 1) wrong.push(`${name}: ${issued.length} certificates issued`);
      // The same token with another key: a copy of the token, refused.
      const other = await createCsr("x");
      const copied = await callOutcome(root.pki.enroll({ token, csrPem: other.csrPem }));
      if (copied.code !== 16) wrong.push(`${name}: another key's enrolment ended ${copied.code}`);
    }
    assert.deepEqual(wrong, []);

    // The audit trail: one enrolment per name, any further success a re-delivery. Its records
    // are written after the answers: up to 20 s for them on a loaded machine.
    const deadline = Date.now() + 20_000;
    let fresh: string[] = [];
    do {
      const { records } = await root.audit.listAuditRecords({
        filter: { method: "Enroll", code: "OK" },
        pageSize: 1000,
      });
      fresh = names.filter(
        (n) =>
          records.filter((r) => r.principal === n && !r.reason.startsWith("re-delivery")).length !==
          1,
      );
      if (fresh.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.deepEqual(fresh, [], "names without exactly one enrolment record");
  });

  it("debvisor-agent enroll run again after giving up sends the same key, and is enrolled", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-agent-retry-"));
    const wrong: string[] = [];
    try {
      // Deadlines of 2 to 39 ms on the whole enrolment (the CA pinned, then Enroll): some end
      // before anything is sent, some after the server spent the token.
      for (let deadline = 2; deadline < 40; deadline++) {
        const name = `node-6${deadline}`;
        const nodeDir = join(dir, name);
        const t = await d.provisioner.pki.createEnrollmentToken({ nodeName: name });
        const options = {
          server: d.daemon.grpcAddress,
          token: t.token,
          caFingerprint: t.caFingerprint,
          dir: nodeDir,
        };
        const first = await enroll({ ...options, timeoutMs: deadline }).then(
          () => "enrolled",
          (e: Error) => e.message,
        );
        // Enrolled: nothing to retry (its token is spent, its pending key gone).
        if (first === "enrolled") continue;
        const again = await enroll(options).then(
          (r) => r,
          (e: Error) => e,
        );
        if (again instanceof Error) {
          wrong.push(`${name}: first ${first}; again: ${again.message}`);
          continue;
        }
        const cert = new X509Certificate(readFileSync(again.files.cert));
        if (!cert.checkPrivateKey(createPrivateKey(readFileSync(again.files.key))))
          wrong.push(`${name}: node.crt is not for node.key`);
        if (existsSync(join(nodeDir, "enroll.pending"))) wrong.push(`${name}: pending key left`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(wrong, []);
  });

  it("re-delivers no certificate revoked since, and binds no revoked node again", async () => {
    const root = d.clientsOf(d.admin);
    const name = "node-599";
    const { token } = await d.provisioner.pki.createEnrollmentToken({ nodeName: name });
    const { csrPem } = await createCsr("x");
    const first = await root.pki.enroll({ token, csrPem });
    assert.equal((await callOutcome(root.pki.enroll({ token, csrPem }))).code, 0, "re-delivered");
    await root.pki.revokeCertificate({ serial: first.serial, reason: "decommissioned" });
    await root.access.setBinding({ principal: name, roles: [] });
    const again = await callOutcome(root.pki.enroll({ token, csrPem }));
    assert.equal(again.code, 16, "a revoked certificate re-delivered");
    const bound = (await root.access.listBindings({})).bindings.filter((b) => b.principal === name);
    assert.deepEqual(bound, [], "the revoked node bound again");
  });
});
