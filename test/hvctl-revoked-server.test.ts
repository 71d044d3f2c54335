// hvctl and a stolen server certificate: a thief holding a copy of a server
// certificate of the cluster CA and its key serves it from its own address.
// To hvctl it passed as the control plane (the chain and the name check out),
// so an operator's hvctl sent it the API key or token of its context. Once
// the certificate is revoked and hvctl has taken the cluster's list of
// revoked server certificates (ListRevokedServerCertificates, kept in its
// state file), hvctl refuses the thief in the TLS handshake: no call, no
// authorization header, no enrollment token (docs/security.md).
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { serialKey } from "../src/core/index.js";
import { EnrollmentService } from "../src/gen/debvisor/v1/pki_pb.js";
import {
  type DaemonProcess,
  HVCTL_BIN,
  runProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

describe("hvctl and a control plane presenting a revoked server certificate", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let config: string;
  let serial: string;
  let rogue: Http2SecureServer;
  let rogueAddress: string;
  /** The state of the hvctl that revoked the stolen certificate. */
  let admin: string;
  /** What the thief's server was sent: each request's path and authorization header. */
  const received: { path: string; authorization: string | undefined }[] = [];

  /** hvctl as the built binary, keeping its state (the kept lists) in `state`. */
  const hvctl = (state: string, ...args: string[]) =>
    runProcess(process.execPath, [HVCTL_BIN, "--config", config, ...args], {
      env: {
        XDG_STATE_HOME: state,
        DEBVISOR_CONTEXT: "",
        DEBVISOR_SERVER: "",
        DEBVISOR_TOKEN: "",
        NO_COLOR: "1",
      },
    });
  /** The operator's API key context, pointed at the thief's server. */
  const atRogue = (state: string) =>
    hvctl(state, "--context", "dev-operator", "--server", rogueAddress, "node", "list");
  const keptFile = (state: string) => join(state, "debvisor", "revoked-servers.json");

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hvctl-revoked-"));
    daemon = await startDevDaemon(dir);
    config = join(dir, "hvctl.yaml");
    admin = mkdtempSync(join(dir, "admin-state-"));
    // The certificate the thief stole: a server certificate of the cluster CA for the names
    // hvctl checks (the dev daemon's own).
    const issued = await hvctl(
      admin,
      ...["cert", "issue", "--cn", "rpc-stolen", "--usage", "server"],
      ...["--san", "localhost,127.0.0.1", "--out", join(dir, "stolen")],
    );
    assert.equal(issued.code, 0, issued.stderr);
    const certPem = readFileSync(join(dir, "stolen", "rpc-stolen.crt"), "utf8");
    serial = serialKey(new X509Certificate(certPem).serialNumber);
    rogue = createSecureServer({
      cert: `${certPem.trimEnd()}\n${readFileSync(join(dir, "stolen", "ca.crt"), "utf8")}`,
      key: readFileSync(join(dir, "stolen", "rpc-stolen.key"), "utf8"),
    });
    rogue.on("stream", (stream, headers) => {
      received.push({
        path: String(headers[":path"]),
        authorization: headers.authorization,
      });
      stream.on("error", () => {});
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "12" },
        {
          endStream: true,
        },
      );
    });
    rogue.listen(0, "127.0.0.1");
    await once(rogue, "listening");
    rogueAddress = `127.0.0.1:${(rogue.address() as AddressInfo).port}`;
    const revoked = await hvctl(admin, "cert", "revoke", serial, "--reason", "stolen");
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /this hvctl refuses it from now on; each other hvctl once/);
    // Kept at once by the hvctl that revoked it, whether or not the daemon's list has it yet.
    assert.ok(readFileSync(keptFile(admin), "utf8").includes(`"${serial}"`), "not kept");
    // The daemon's list has it (it is made again shortly after a revocation).
    const channel = openChannel(resolveContext(config, "dev-operator"));
    try {
      const pki = createServiceClient(EnrollmentService, channel);
      await eventually(
        async () =>
          assert.ok((await pki.listRevokedServerCertificates({})).serials.includes(serial)),
        { timeoutMs: 10_000, intervalMs: 100 },
      );
    } finally {
      channel.close();
    }
  });
  after(() => {
    rogue?.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("reaches the thief's server, key and all, while it has not taken the list (the check can fail)", async () => {
    received.length = 0;
    const r = await atRogue(mkdtempSync(join(dir, "fresh-state-")));
    assert.notEqual(r.code, 0, "the thief answers UNIMPLEMENTED");
    assert.ok(received.length > 0, `the thief was not reached: ${r.stderr}`);
    assert.match(received[0]?.authorization ?? "", /^Bearer dvk_/);
  });

  it("is refused by the hvctl that revoked it, from that command on", async () => {
    received.length = 0;
    const r = await atRogue(admin);
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, new RegExp(`certificate ${serial} is revoked`));
    assert.deepEqual(received, [], "nothing was sent to the thief");
  });

  it("refuses it in the handshake once it has: no call, no authorization header, no enrollment token", async () => {
    const state = mkdtempSync(join(dir, "state-"));
    // Any command against the real daemon takes the list (the state is new: it has none).
    const learnt = await hvctl(state, "--context", "dev-operator", "auth", "whoami");
    assert.equal(learnt.code, 0, learnt.stderr);
    assert.ok(readFileSync(keptFile(state), "utf8").includes(`"${serial}"`), "not learnt");
    received.length = 0;
    const r = await atRogue(state);
    assert.equal(r.code, 6, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^hvctl: the control plane's certificate ${serial} is revoked: ${rogueAddress} presented it, so nothing was sent there; .*\\(UNAVAILABLE\\)\\n$`,
      ),
    );
    assert.deepEqual(received, [], "the thief was sent a call");
    assert.ok(readFileSync(keptFile(state), "utf8").includes(`"${serial}"`), "the list was lost");
    // Enrolling a machine by hand: the one-time token is a secret too.
    const fingerprint = new X509Certificate(readFileSync(join(dir, "stolen", "ca.crt")))
      .fingerprint256;
    const enrolled = await hvctl(
      state,
      ...["--server", rogueAddress, "cert", "enroll", "--token", "dvt_one-time-secret"],
      ...["--fingerprint", `sha256:${fingerprint}`, "--out", join(dir, "enrolled")],
    );
    assert.equal(enrolled.code, 6, enrolled.stderr);
    assert.match(
      enrolled.stderr,
      new RegExp(`^hvctl: the control plane's certificate ${serial} is revoked: `),
    );
    assert.deepEqual(received, [], "the thief was sent the enrollment token");
  });

  it("takes no list after a call refused its credential (a wrong key would count twice)", async () => {
    const doc = parseYaml(readFileSync(config, "utf8")) as {
      contexts: { name: string; credential: { apiKeyFile?: string } }[];
    };
    const file = doc.contexts.find((c) => c.name === "dev-operator")?.credential.apiKeyFile;
    assert.ok(file !== undefined);
    const good = readFileSync(join(dir, file), "utf8").trim();
    const bad = join(dir, "bad.key");
    writeFileSync(bad, `${good.slice(0, -1)}${good.endsWith("A") ? "B" : "A"}\n`, { mode: 0o600 });
    const state = mkdtempSync(join(dir, "state-bad-key-"));
    // The daemon locks a key out after 5 failures: 4 commands, each refused, stay under it.
    for (let i = 0; i < 4; i++) {
      const r = await hvctl(
        state,
        "--context",
        "dev-operator",
        "--token-file",
        bad,
        "auth",
        "whoami",
      );
      assert.notEqual(r.code, 0);
      assert.doesNotMatch(r.stderr, /locked out/, `command ${i + 1}: ${r.stderr}`);
    }
    assert.equal(existsSync(keptFile(state)), false, "a list was taken");
  });
});
