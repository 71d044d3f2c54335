import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import type { ResolvedContext } from "../src/client/index.js";
import { createCsr } from "../src/pki/index.js";
import type { DaemonProcess } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { startProvisionerDaemon } from "./helpers/provisioner-daemon.js";

/**
 * Found by an adversarial review of enrollment: two enrolments of one new
 * name meet at `pki/enrolling/<name>`, but the name becomes a node (its
 * binding to the node role) only after the winner's certificate is issued.
 * An enrolment that read the claim after the winner spent its token, and
 * judged the name before that binding, spent its own token too: two holders
 * of the name, as when both were sent at the same moment before the claim.
 */
describe("an enrolment that starts while another of its name is being issued", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let provisioner: ReturnType<typeof clientsOf>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-claim-"));
    ({ daemon, admin, provisioner } = await startProvisionerDaemon(dir, channels, {
      pki: { enrollLimit: { ratePerSecond: 100, burst: 1000 } },
    }));
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("is refused: one holder of the name, whenever the second comes", async () => {
    // The provisioner makes two tokens for a new name, hands one to the real node, and sends
    // the other a few milliseconds after the node's (0 to 19 ms: some land in the window).
    const root = clientsOf(admin);
    const twice: string[] = [];
    for (let round = 0; round < 20; round++) {
      const name = `node-8${round}`;
      const a = await provisioner.pki.createEnrollmentToken({ nodeName: name });
      const b = await provisioner.pki.createEnrollmentToken({ nodeName: name });
      const [csrA, csrB] = await Promise.all([createCsr("x"), createCsr("x")]);
      const first = callOutcome(root.pki.enroll({ token: a.token, csrPem: csrA.csrPem }));
      await new Promise((r) => setTimeout(r, round));
      const second = callOutcome(root.pki.enroll({ token: b.token, csrPem: csrB.csrPem }));
      const outcomes = await Promise.all([first, second]);
      const enrolled = outcomes.filter((o) => o.code === 0).length;
      if (enrolled === 2) twice.push(`${name} (second sent ${round} ms later)`);
    }
    assert.deepEqual(twice, [], "names enrolled by two tokens");
  });
});
