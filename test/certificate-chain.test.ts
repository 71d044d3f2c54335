import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  createServiceClient,
  openChannel,
  type ResolvedContext,
  resolveContext,
} from "../src/client/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService } from "../src/gen/debvisor/v1/pki_pb.js";
import { createCsr } from "../src/pki/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { callOutcome } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const failure = callOutcome;

describe("certificates: renewed once, revoked with everything derived from them, issued by the right people", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const pki = (ctx: ResolvedContext) => {
    const ch = openChannel(ctx);
    channels.push(ch);
    return createServiceClient(EnrollmentService, ch);
  };
  const withCert = (certFile: string, keyFile: string): ResolvedContext => ({
    ...admin,
    certPem: readFileSync(certFile, "utf8"),
    keyPem: readFileSync(keyFile, "utf8"),
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-certs-"));
    daemon = await startDevDaemon(dir, {
      rbac: { roles: [{ name: "cert-issuer", grants: ["pki:cert:issue", "pki:cert:list"] }] },
      pki: { minRenewalAgeSeconds: 0 },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("renews a certificate once: a second renewal of the same certificate is refused", async () => {
    // alice's certificate, issued by the admin, and a copy kept (as a thief would).
    const out = join(dir, "alice");
    const issued = await hvctl("cert", "issue", "--cn", "alice", "--client", "--out", out);
    assert.equal(issued.code, 0, issued.stderr);
    copyFileSync(join(out, "alice.crt"), join(dir, "alice-copy.crt"));
    copyFileSync(join(out, "alice.key"), join(dir, "alice-copy.key"));
    const stolen = pki(withCert(join(dir, "alice-copy.crt"), join(dir, "alice-copy.key")));
    const first = await stolen.renewCertificate({ csrPem: (await createCsr("alice")).csrPem });
    assert.ok(first.certificatePem.includes("BEGIN CERTIFICATE"));
    const again = await failure(
      stolen.renewCertificate({ csrPem: (await createCsr("alice")).csrPem }),
    );
    assert.equal(again.code, grpc.status.PERMISSION_DENIED);
    assert.equal(again.reason, "CERT_ALREADY_RENEWED");
    const list = await hvctl("cert", "list", "--subject", "alice", "-o", "json");
    const certs = (JSON.parse(list.stdout) as { certificates: unknown[] }).certificates;
    assert.equal(certs.length, 2, "the refused renewal issued nothing");
  });

  it("lets only a cluster admin issue server certificates or certificates named after a node", async () => {
    const key = await hvctl(
      "apikey",
      "create",
      "--roles",
      "cert-issuer",
      "--principal",
      "issuer-bot",
      "-o",
      "json",
    );
    assert.equal(key.code, 0, key.stderr);
    const { token } = JSON.parse(key.stdout) as { token: string };
    const bot = pki({ ...admin, certPem: undefined, keyPem: undefined, bearer: token });
    const csrPem = (await createCsr("x")).csrPem;
    // A node promised a token but not enrolled yet, and one registered by hand.
    assert.equal((await hvctl("token", "create", "node-77")).code, 0);
    const reg = await hvctl(
      "node",
      "register",
      "hv-hand",
      "--hostname",
      "hv-hand.example",
      "--ip",
      "10.0.0.9",
    );
    assert.equal(reg.code, 0, reg.stderr);
    for (const req of [
      { commonName: "panel", usage: "server", sans: ["panel.example"], csrPem },
      { commonName: "node-77", usage: "client", csrPem },
      { commonName: "hv-hand", usage: "client", csrPem },
      { commonName: "node-01", usage: "client", csrPem },
    ]) {
      const r = await failure(bot.issueCertificate(req));
      assert.equal(r.code, grpc.status.PERMISSION_DENIED, req.commonName);
    }
    const names = await hvctl("cert", "list", "-o", "json");
    const subjects = (
      JSON.parse(names.stdout) as { certificates: { subject: string }[] }
    ).certificates.map((c) => c.subject);
    for (const cn of ["panel", "node-77", "hv-hand"]) assert.ok(!subjects.includes(cn), cn);
    // A plain client certificate is still the issuer's to make; the admin may make the others.
    const plain = await bot.issueCertificate({ commonName: "ci-runner", usage: "client", csrPem });
    assert.ok(plain.certificatePem.includes("BEGIN CERTIFICATE"));
    const adminIssued = await pki(admin).issueCertificate({
      commonName: "node-77",
      usage: "client",
      csrPem,
    });
    assert.ok(adminIssued.certificatePem.includes("BEGIN CERTIFICATE"));
  });

  it("revoking the dev admin's certificate, made outside the RPC, revokes its renewal", async () => {
    const original = new X509Certificate(readFileSync(join(dir, "pki", "admin.crt"))).serialNumber;
    const renewed = await hvctl("cert", "renew");
    assert.equal(renewed.code, 0, renewed.stderr);
    const fresh = resolveContext(join(dir, "hvctl.yaml"), "dev");
    assert.notEqual(new X509Certificate(fresh.certPem ?? "").serialNumber, original);
    const nodes = () => {
      const ch = openChannel(fresh);
      channels.push(ch);
      return createServiceClient(NodeService, ch);
    };
    assert.ok((await nodes().listNodes({})).nodes.length > 0, "the renewed certificate works");
    const revoked = await pki(fresh).revokeCertificate({ serial: original, reason: "stolen" });
    assert.ok(revoked.revoked !== undefined);
    await eventually(async () =>
      assert.equal(
        (await failure(nodes().listNodes({}))).code,
        grpc.status.UNAUTHENTICATED,
        "the renewal is revoked with its original",
      ),
    );
  });
});
