import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
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
 * since by another token, or made a node otherwise (for a token not a cluster
 * admin's): the retry then issued a second identity of a node that already
 * has its holder (what b1d9428's claim rule forbids).
 */
describe("the retry of an enrolment spent, never issued", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-enrol-superseded-"));
  const channels: grpc.Client[] = [];
  const kills: (() => void)[] = [];
  const config = { pki: { enrollLimit: { ratePerSecond: 100, burst: 1000 } } };
  /** Per name: the token spent, and the CSR (its key) it was spent for. */
  const stale = new Map<string, { token: string; csrPem: string }>();
  let root: ReturnType<typeof devClients>;
  before(async () => {
    const first = await startProvisionerDaemon(dir, channels, config);
    kills.push(() => first.daemon.kill());
    for (const name of ["node-901", "node-902"]) {
      const { token } = await first.provisioner.pki.createEnrollmentToken({ nodeName: name });
      stale.set(name, { token, csrPem: (await createCsr("x")).csrPem });
    }
    // The server is killed right after the spends' transactions: token used, the name's claim,
    // the spend's record with the key's SPKI and nothing more (what Enroll writes first).
    first.daemon.kill();
    await first.daemon.exited;
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    try {
      for (const [name, { token, csrPem }] of stale) {
        const id = (/^dvt_([0-9a-f]{16})_/.exec(token) as RegExpExecArray)[1] as string;
        const tok = await getMessage(store, EnrollmentTokenRecordSchema, `pki/tokens/${id}`);
        assert.ok(tok !== undefined);
        const spki = createHash("sha256")
          .update((await acceptCsr(csrPem)).spkiDer)
          .digest("hex");
        const used = create(EnrollmentTokenRecordSchema, {
          ...tok.message,
          usedAtMs: BigInt(Date.now()),
        });
        const txn = await store.txn({
          compares: [{ key: `pki/tokens/${id}`, modRevision: tok.modRevision }],
          success: [
            {
              type: "put",
              key: `pki/tokens/${id}`,
              value: encodeMessage(EnrollmentTokenRecordSchema, used),
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
      }
    } finally {
      await store.close();
    }
    const daemon = await startDevDaemon(dir, {
      rbac: { roles: [{ name: "provisioner", grants: ["pki:token:create", "node:*"] }] },
      ...config,
    });
    kills.push(() => daemon.kill());
    root = devClients(resolveContext(join(dir, "hvctl.yaml"), "dev"), channels);
  });
  after(() => {
    for (const ch of channels) ch.close();
    for (const k of kills) k();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The stale token's retry with its key must be refused, and `serial` stay the name's one valid certificate. */
  async function assertNoSecondHolder(name: string, serial: string) {
    const { token, csrPem } = stale.get(name) as { token: string; csrPem: string };
    const retry = await callOutcome(root.pki.enroll({ token, csrPem }));
    assert.equal(retry.code, 16, `the stale token's retry ended ${retry.code}`);
    const valid = (await root.pki.listCertificates({ subject: name })).certificates.filter(
      (c) => !c.revoked,
    );
    assert.deepEqual(
      valid.map((c) => c.serial.toLowerCase()),
      [serial.toLowerCase()],
      `valid certificates of ${name}`,
    );
  }

  it("issues nothing once the name was enrolled by another token since", async () => {
    // The operator enrols the name again with a cluster admin's token: the node as it is now.
    const name = "node-901";
    const again = await root.pki.createEnrollmentToken({ nodeName: name });
    const node = await createCsr("x");
    const enrolled = await root.pki.enroll({ token: again.token, csrPem: node.csrPem });
    await assertNoSecondHolder(name, new X509Certificate(enrolled.certificatePem).serialNumber);
  });

  it("issues nothing for a token not a cluster admin's once the name became a node otherwise", async () => {
    // The operator makes the name a node by hand: its certificate, and the node role.
    const name = "node-902";
    const node = await createCsr("x");
    const issued = await root.pki.issueCertificate({
      commonName: name,
      usage: "client",
      csrPem: node.csrPem,
    });
    await root.access.setBinding({ principal: name, roles: ["node"] });
    await assertNoSecondHolder(name, issued.serial);
  });
});
