import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { resolveContext } from "../src/client/index.js";
import { silentLogger } from "../src/core/index.js";
import { EnrollmentTokenRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { acceptCsr, createCsr } from "../src/pki/index.js";
import { createSqliteStore, encodeMessage, getMessage } from "../src/store/index.js";
import { startDevDaemon } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { startProvisionerDaemon } from "./helpers/provisioner-daemon.js";

/**
 * A token spent whose certificate was never issued (the server killed between
 * the spend and the issue, or the store too slow for the server's 30 s) is
 * finished by its retry with the same key. Not once the name was enrolled
 * since by another token: the retry then issued a second identity of a node
 * that already has its holder (what b1d9428's claim rule forbids).
 */
describe("the retry of an enrolment spent, never issued", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-enrol-superseded-"));
  const channels: grpc.Client[] = [];
  const kills: (() => void)[] = [];
  after(() => {
    for (const ch of channels) ch.close();
    for (const k of kills) k();
    rmSync(dir, { recursive: true, force: true });
  });
  const config = { pki: { enrollLimit: { ratePerSecond: 100, burst: 1000 } } };

  it("issues nothing once the name was enrolled by another token since", async () => {
    const name = "node-901";
    const first = await startProvisionerDaemon(dir, channels, config);
    kills.push(() => first.daemon.kill());
    const { token } = await first.provisioner.pki.createEnrollmentToken({ nodeName: name });
    const id = (/^dvt_([0-9a-f]{16})_/.exec(token) as RegExpExecArray)[1] as string;
    const stale = await createCsr("x");
    // The server is killed right after the spend's transaction: token used, the name's claim,
    // the spend's record with the key's SPKI and nothing more (what Enroll writes first).
    first.daemon.kill();
    await first.daemon.exited;
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    try {
      const tok = await getMessage(store, EnrollmentTokenRecordSchema, `pki/tokens/${id}`);
      assert.ok(tok !== undefined);
      const spki = createHash("sha256")
        .update((await acceptCsr(stale.csrPem)).spkiDer)
        .digest("hex");
      const txn = await store.txn({
        compares: [{ key: `pki/tokens/${id}`, modRevision: tok.modRevision }],
        success: [
          {
            type: "put",
            key: `pki/tokens/${id}`,
            value: encodeMessage(
              EnrollmentTokenRecordSchema,
              create(EnrollmentTokenRecordSchema, { ...tok.message, usedAtMs: BigInt(Date.now()) }),
            ),
          },
          { type: "put", key: `pki/enrolling/${name}`, value: new TextEncoder().encode(id) },
          {
            type: "put",
            key: `pki/enrolled/${id}`,
            value: new TextEncoder().encode(JSON.stringify({ spki })),
          },
        ],
      });
      assert.ok(txn.succeeded);
    } finally {
      await store.close();
    }
    const daemon = await startDevDaemon(dir, {
      rbac: { roles: [{ name: "provisioner", grants: ["pki:token:create", "node:*"] }] },
      ...config,
    });
    kills.push(() => daemon.kill());
    const root = devClients(resolveContext(join(dir, "hvctl.yaml"), "dev"), channels);
    // The operator enrols the name again with a cluster admin's token: the node as it is now.
    const again = await root.pki.createEnrollmentToken({ nodeName: name });
    const node = await createCsr("x");
    const enrolled = await root.pki.enroll({ token: again.token, csrPem: node.csrPem });
    // The stale token's retry with its key: the name has its holder; no second one.
    const retry = await callOutcome(root.pki.enroll({ token, csrPem: stale.csrPem }));
    assert.equal(retry.code, 16, `the superseded token's retry ended ${retry.code}`);
    const valid = (await root.pki.listCertificates({ subject: name })).certificates.filter(
      (c) => !c.revoked,
    );
    assert.deepEqual(
      valid.map((c) => c.serial.toLowerCase()),
      [new X509Certificate(enrolled.certificatePem).serialNumber.toLowerCase()],
      "certificates of the name",
    );
  });
});
