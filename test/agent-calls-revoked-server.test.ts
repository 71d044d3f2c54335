// An agent's own calls to the control plane, besides its stream and
// transfers, refuse a server presenting a revoked server certificate
// (docs/security.md). Found by an adversarial review: the renewal of its
// certificate opened its own channel without the check, and goes to the
// first configured server whenever no stream is up (the stream refused the
// thief's server); the thief's answer was written as the node's
// certificate, and the node could no longer connect anywhere. Enrolling the
// directory again (its certificate expired) sent the one-time token to the
// thief, who could enroll a key of its own as the node with it.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { REVOKED_SERVERS_FILE } from "../src/agent/index.js";
import { hideIpSniWarning } from "../src/client/index.js";
import { serialKey } from "../src/core/index.js";
import { EnrollResponseSchema } from "../src/gen/debvisor/v1/pki_pb.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { AGENT_BIN, type AgentProcess, startAgent } from "./helpers/agent-process.js";
import { runProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

hideIpSniWarning();

const DAY = 86_400_000;
const RENEW = "/debvisor.v1.EnrollmentService/RenewCertificate";
const ENROLL = "/debvisor.v1.EnrollmentService/Enroll";

describe("an agent's own calls and a revoked server certificate", () => {
  let pki: TestPki;
  let dir: string;
  let nodeCertPem: string;
  /** The thief's server: the stolen (revoked) server certificate and key. */
  let rogue: Http2SecureServer;
  let rogueAddress: string;
  /** The paths of the calls the rogue server was sent. */
  const calls: string[] = [];
  let agent: AgentProcess | undefined;

  before(async () => {
    pki = await createTestPki();
    dir = mkdtempSync(join(tmpdir(), "dv-agent-renewal-revoked-"));
    // A node certificate 25 days into its 30: its renewal is due at once.
    const ca = await loadCertificateAuthority(pki.ca);
    const node = await ca.issue({
      commonName: "node-a",
      usage: "client",
      validityDays: 30,
      now: new Date(Date.now() - 25 * DAY),
    });
    nodeCertPem = node.certPem;
    writeFileSync(join(dir, "ca.crt"), pki.ca.certPem);
    writeFileSync(join(dir, "node.crt"), node.certPem);
    writeFileSync(join(dir, "node.key"), node.keyPem, { mode: 0o600 });
    // The control plane told this node the server certificate is revoked.
    const stolen = serialKey(new X509Certificate(pki.server.certPem).serialNumber);
    writeFileSync(join(dir, REVOKED_SERVERS_FILE), `${JSON.stringify({ serials: [stolen] })}\n`);
    // Answers a renewal or an enrollment with a certificate of the thief's choosing (here its
    // own); anything else is UNIMPLEMENTED. Its chain holds the cluster CA, as a daemon's does.
    rogue = createSecureServer({
      cert: `${pki.server.certPem.trimEnd()}\n${pki.ca.certPem}`,
      key: pki.server.keyPem,
      ca: pki.ca.certPem,
      requestCert: true,
      rejectUnauthorized: false,
    });
    rogue.on("stream", (stream, headers) => {
      const path = String(headers[":path"]);
      calls.push(path);
      stream.on("data", () => {});
      stream.on("error", () => {});
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      stream.on("wantTrailers", () =>
        stream.sendTrailers({ "grpc-status": path === RENEW || path === ENROLL ? "0" : "12" }),
      );
      if (path !== RENEW && path !== ENROLL) {
        stream.end();
        return;
      }
      const body = toBinary(
        EnrollResponseSchema,
        create(EnrollResponseSchema, {
          certificatePem: pki.server.certPem,
          caPem: pki.ca.certPem,
          serial: stolen,
        }),
      );
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      Buffer.from(body).copy(frame, 5);
      stream.end(frame);
    });
    rogue.listen(0, "127.0.0.1");
    await once(rogue, "listening");
    rogueAddress = `127.0.0.1:${(rogue.address() as AddressInfo).port}`;
  });
  after(async () => {
    agent?.proc.kill("SIGKILL");
    rogue?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it("does not renew through the thief's server, nor install what it answers", async () => {
    agent = startAgent([
      "--dir",
      dir,
      "--server",
      rogueAddress,
      "--tls-server-name",
      "localhost",
      "--driver",
      "sim",
      "--sim-vms",
      "1",
    ]);
    await agent.waitLog("agent running");
    // The renewal is due a second after the start; it either reached the server or failed.
    const a = agent;
    const outcome = await eventually(
      () => {
        const hit = a.logs.find(
          (l) =>
            l.msg === "certificate renewed" ||
            l.msg === "certificate renewal failed; retrying in a minute",
        );
        assert.ok(hit, "the renewal was not tried");
        return hit;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    assert.deepEqual(
      calls.filter((p) => p === RENEW),
      [],
      "the agent sent its renewal to a server presenting a revoked certificate",
    );
    assert.equal(outcome.msg, "certificate renewal failed; retrying in a minute");
    assert.equal(
      readFileSync(join(dir, "node.crt"), "utf8"),
      nodeCertPem,
      "the node's certificate was replaced by the thief's answer",
    );
    assert.ok(
      a.logs.some(
        (l) =>
          l.msg === "refused the control plane: its certificate is revoked" &&
          l.server === rogueAddress,
      ),
    );
  });

  it("enrolling the directory again does not send the token to the thief's server", async () => {
    // The directory is the agent's: it is stopped first (it holds the directory's lock).
    if (agent !== undefined && agent.proc.exitCode === null) {
      const exited = once(agent.proc, "exit");
      agent.proc.kill("SIGTERM");
      await exited;
    }
    const fingerprint = new X509Certificate(pki.ca.certPem).fingerprint256;
    const r = await runProcess(
      process.execPath,
      [
        AGENT_BIN,
        "enroll",
        "--server",
        rogueAddress,
        "--tls-server-name",
        "localhost",
        "--ca-fingerprint",
        `sha256:${fingerprint}`,
        "--dir",
        dir,
      ],
      { env: { DEBVISOR_ENROLL_TOKEN: "one-time-secret" } },
    );
    assert.deepEqual(
      calls.filter((p) => p === ENROLL),
      [],
      "the agent sent its enrollment token to a server presenting a revoked certificate",
    );
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /revoked/, r.stderr);
    assert.equal(readFileSync(join(dir, "node.crt"), "utf8"), nodeCertPem);
  });
});
