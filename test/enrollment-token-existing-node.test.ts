import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { ResolvedContext } from "../src/client/index.js";
import { createCsr } from "../src/pki/index.js";
import type { DaemonProcess } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { startProvisionerDaemon } from "./helpers/provisioner-daemon.js";

/**
 * Found by an adversarial review of the built-in CA: `IssueCertificate`
 * for a node's name is a cluster admin's alone, but an enrollment token for
 * an enrolled node's name was anyone's who could create tokens and held the
 * node role's grants (a provisioning role): enrolling with it handed over
 * that node's identity.
 */
describe("an enrollment token for a node that already exists", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let provisioner: ReturnType<typeof clientsOf>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-token-node-"));
    ({ daemon, admin, provisioner } = await startProvisionerDaemon(dir, channels));
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("is a cluster admin's to create, as a certificate for that node is", async () => {
    // A new node is the provisioner's to enrol.
    assert.ok((await provisioner.pki.createEnrollmentToken({ nodeName: "node-09" })).token);
    // node-01 is registered and enrolled: a token for it would make whoever enrols node-01.
    const outcome = await callOutcome(
      provisioner.pki.createEnrollmentToken({ nodeName: "node-01" }),
    );
    if (outcome.code === 0) {
      const token = await provisioner.pki.createEnrollmentToken({ nodeName: "node-01" });
      const enrolled = await clientsOf(admin).pki.enroll({
        token: token.token,
        csrPem: (await createCsr("x")).csrPem,
      });
      assert.fail(
        `a provisioner got a certificate for the existing ${new X509Certificate(enrolled.certificatePem).subject}`,
      );
    }
    assert.equal(outcome.code, grpc.status.PERMISSION_DENIED);
    // The cluster admin may re-enrol a node (a reinstalled host).
    assert.ok((await clientsOf(admin).pki.createEnrollmentToken({ nodeName: "node-01" })).token);
  });

  it("made before the name became a node, does not enrol that node", async () => {
    // The provisioner makes a token for a name no node holds yet, and keeps it (a week at most).
    const early = await provisioner.pki.createEnrollmentToken({
      nodeName: "node-21",
      ttlSeconds: 604_800n,
    });
    // The cluster admin enrols node-21 with its own token.
    const root = clientsOf(admin);
    const own = await root.pki.createEnrollmentToken({ nodeName: "node-21" });
    await root.pki.enroll({ token: own.token, csrPem: (await createCsr("x")).csrPem });
    // The early token, used now, would make its holder node-21.
    const outcome = await callOutcome(
      root.pki.enroll({ token: early.token, csrPem: (await createCsr("x")).csrPem }),
    );
    assert.equal(
      outcome.code,
      grpc.status.UNAUTHENTICATED,
      "a token made by a provisioner before node-21 existed enrolled the existing node-21",
    );
    // A token the cluster admin makes for an existing node still re-enrols it.
    const again = await root.pki.createEnrollmentToken({ nodeName: "node-21" });
    assert.ok(
      (await root.pki.enroll({ token: again.token, csrPem: (await createCsr("x")).csrPem }))
        .certificatePem,
    );
  });

  it("two tokens for one new name, used at the same moment, enrol one holder", async () => {
    // A provisioner makes two tokens for a new name, hands one to the real node and keeps
    // the other, and enrols with it as the real node does: both held the name's identity.
    // (Four rounds of three enrolments: Enroll's per-address bucket holds 20.)
    const root = clientsOf(admin);
    for (let round = 0; round < 4; round++) {
      const name = `node-4${round}`;
      const [a, b] = await Promise.all([
        provisioner.pki.createEnrollmentToken({ nodeName: name }),
        provisioner.pki.createEnrollmentToken({ nodeName: name }),
      ]);
      const [csrA, csrB] = await Promise.all([createCsr("x"), createCsr("x")]);
      const outcomes = await Promise.all([
        callOutcome(root.pki.enroll({ token: a.token, csrPem: csrA.csrPem })),
        callOutcome(root.pki.enroll({ token: b.token, csrPem: csrB.csrPem })),
      ]);
      const enrolled = outcomes.filter((o) => o.code === 0).length;
      assert.equal(
        enrolled,
        1,
        `round ${round}: ${enrolled} holders of ${name} enrolled (${outcomes.map((o) => o.code)})`,
      );
      // The loser's retry is judged on a name that is now a node: refused.
      const lost = outcomes[0]?.code === 0 ? b : a;
      const retry = await callOutcome(
        root.pki.enroll({ token: lost.token, csrPem: (await createCsr("x")).csrPem }),
      );
      assert.notEqual(retry.code, 0, `round ${round}: the retry enrolled ${name} again`);
    }
  });
});
