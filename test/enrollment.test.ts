import "reflect-metadata";
import assert from "node:assert/strict";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService } from "../src/gen/debvisor/v1/pki_pb.js";
import {
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { createCsr } from "../src/pki/index.js";
import { bundledBin } from "./helpers/bundled-bin.js";
import { type DaemonProcess, runProcess, startDaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary } from "./helpers/grpc-client.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import { nodeChannel } from "./helpers/node-stream.js";

x509.cryptoProvider.set(webcrypto as never);
const AGENT_BIN = bundledBin("debvisor-agent");
const REGISTER = "/debvisor.v1.NodeService/RegisterNode";
const register = (id: string) =>
  Buffer.from(
    toBinary(NodeInfoSchema, create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` })),
  );

describe("joining the cluster with a one-time token", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const agent = (token: string, ...args: string[]) =>
    runProcess(process.execPath, [AGENT_BIN, ...args], { env: { DEBVISOR_ENROLL_TOKEN: token } });
  /** Runs debvisor-agent enroll against the daemon, the token in the environment. */
  const enrollNode = (token: string, caFingerprint: string, nodeDir: string) =>
    agent(
      token,
      "enroll",
      "--server",
      daemon.grpcAddress,
      "--ca-fingerprint",
      caFingerprint,
      "--dir",
      nodeDir,
    );
  const tokenFor = async (node: string, ...extra: string[]) => {
    const r = await hvctl("-o", "json", "token", "create", node, ...extra);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { token: string; caFingerprint: string };
  };
  const enrollClient = () => {
    const ch = openChannel({
      ...resolveContext(join(dir, "hvctl.yaml")),
      certPem: undefined,
      keyPem: undefined,
      server: daemon.grpcAddress,
    });
    return { ch, svc: createServiceClient(EnrollmentService, ch) };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-enroll-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(
      cfg,
      "auth:\n  lockout:\n    maxFailures: 12\npki:\n  minRenewalAgeSeconds: 0\n  enrollLimit:\n    ratePerSecond: 10\n    burst: 200\n",
    );
    daemon = await startDaemonProcess([
      "--dev",
      "--data-dir",
      dir,
      "--config",
      cfg,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
  });
  after(() => daemon?.kill());

  it("a node joins with nothing but a token and the CA fingerprint, and may act only for itself", async () => {
    const { token, caFingerprint } = await tokenFor("node-50");
    const nodeDir = join(dir, "node-50");
    const r = await enrollNode(token, caFingerprint, nodeDir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^enrolled as node-50: certificate [0-9A-F]+ in /);
    assert.equal(statSync(join(nodeDir, "node.key")).mode & 0o777, 0o600);
    const cert = new X509Certificate(readFileSync(join(nodeDir, "node.crt")));
    assert.equal(cert.subject, "CN=node-50");
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"]);
    assert.equal(cert.ca, false);
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.ok(days > 29.9 && days < 30.1, `${days} days`);
    const ch = nodeChannel(daemon.grpcAddress, nodeDir);
    assert.equal((await rawUnary(ch, REGISTER, register("node-50"))).error, undefined);
    assert.equal(
      (await rawUnary(ch, REGISTER, register("node-51"))).error?.code,
      grpc.status.PERMISSION_DENIED,
    );
    ch.close();
  });

  it("refuses a pinned fingerprint that is not the server's CA, before sending the token", async () => {
    const { token } = await tokenFor("node-52");
    const r = await enrollNode(token, `sha256:${"0".repeat(64)}`, join(dir, "x"));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no certificate in its chain has the pinned fingerprint/);
    const ok = await enrollNode(
      token,
      (await tokenFor("node-53")).caFingerprint,
      join(dir, "node-52"),
    );
    assert.equal(ok.code, 0, "the token was not spent by the refused attempt");
  });

  it("refuses a token used twice or expired", async () => {
    const { token, caFingerprint } = await tokenFor("node-54");
    assert.equal((await enrollNode(token, caFingerprint, join(dir, "n54a"))).code, 0);
    const again = await enrollNode(token, caFingerprint, join(dir, "n54b"));
    assert.equal(again.code, 1);
    assert.match(again.stderr, /authentication required/);
    const short = await tokenFor("node-55", "--ttl", "1s");
    // The token's 1 s TTL expiring is the behaviour under test: a fixed wait.
    await new Promise((r) => setTimeout(r, 1300));
    const late = await enrollNode(short.token, short.caFingerprint, join(dir, "n55"));
    assert.equal(late.code, 1);
  });

  it("gives exactly one certificate to 50 concurrent enrollments with one token", async () => {
    const { token } = await tokenFor("node-56");
    const csrs = await Promise.all(Array.from({ length: 50 }, () => createCsr("x")));
    const { ch, svc } = enrollClient();
    const outcomes = await Promise.allSettled(
      csrs.map((c) => svc.enroll({ token, csrPem: c.csrPem })),
    );
    ch.close();
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
  });

  it("lets the CA choose subject and extensions, and refuses weak keys and bad signatures", async () => {
    const { ch, svc } = enrollClient();
    const greedyKeys = (await webcrypto.subtle.generateKey(
      { name: "ECDSA", namedCurve: "P-256" },
      true,
      ["sign", "verify"],
    )) as never;
    const greedy = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=admin",
      keys: greedyKeys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.BasicConstraintsExtension(true, 2, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      ],
    });
    const t1 = await tokenFor("node-57");
    const issued = await svc.enroll({ token: t1.token, csrPem: greedy.toString("pem") });
    const cert = new X509Certificate(issued.certificatePem);
    assert.equal(cert.subject, "CN=node-57");
    assert.equal(cert.ca, false);
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"]);

    const t2 = await tokenFor("node-58");
    const weak = (await webcrypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 1024,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["sign", "verify"],
    )) as never;
    const weakCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=x",
      keys: weak,
      signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    });
    await assert.rejects(
      svc.enroll({ token: t2.token, csrPem: weakCsr.toString("pem") }),
      (e: grpc.ServiceError) => e.code === 3 && /RSA-1024 is too weak/.test(e.details),
    );
    const good = await createCsr("x");
    const der = Buffer.from(good.csrPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der[der.length - 3] = (der[der.length - 3] as number) ^ 0xff;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(
      svc.enroll({ token: t2.token, csrPem: tampered }),
      (e: grpc.ServiceError) => e.code === 3,
    );
    assert.ok(
      (await svc.enroll({ token: t2.token, csrPem: good.csrPem })).certificatePem,
      "refused CSRs did not spend the token",
    );
    ch.close();
  });

  it("renews over mTLS with a new key; the old serial is marked superseded", async () => {
    const nodeDir = join(dir, "node-50");
    const before = new X509Certificate(readFileSync(join(nodeDir, "node.crt"))).serialNumber;
    const keyBefore = readFileSync(join(nodeDir, "node.key"), "utf8");
    const r = await runProcess(process.execPath, [
      AGENT_BIN,
      "renew",
      "--server",
      daemon.grpcAddress,
      "--dir",
      nodeDir,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const afterSerial = new X509Certificate(readFileSync(join(nodeDir, "node.crt"))).serialNumber;
    assert.notEqual(afterSerial, before);
    assert.notEqual(readFileSync(join(nodeDir, "node.key"), "utf8"), keyBefore, "a new key");
    const list = await hvctl("cert", "list", "--subject", "node-50");
    assert.match(
      list.stdout,
      new RegExp(`^${before}\\s+node-50\\s.*superseded by ${afterSerial}`, "m"),
    );
    const ch = nodeChannel(daemon.grpcAddress, nodeDir);
    assert.equal(
      (await rawUnary(ch, REGISTER, register("node-50"))).error,
      undefined,
      "the renewed certificate works",
    );
    ch.close();
  });

  it("refuses a revoked node at its next call and closes its open stream within seconds", async () => {
    const nodeDir = join(dir, "node-50");
    const serial = new X509Certificate(readFileSync(join(nodeDir, "node.crt"))).serialNumber;
    const ch = nodeChannel(daemon.grpcAddress, nodeDir);
    const stream = ch.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (m: Uint8Array) => Buffer.from(m),
      (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
      new grpc.Metadata(),
      {},
    );
    const first = new Promise((resolve) => stream.once("data", resolve));
    const ended = new Promise<number>((resolve) =>
      stream.once("error", (e: grpc.ServiceError) => resolve(e.code)),
    );
    stream.write(
      toBinary(
        ServerReflectionRequestSchema,
        create(ServerReflectionRequestSchema, {
          messageRequest: { case: "listServices", value: "" },
        }),
      ),
    );
    await first;
    const revoked = await hvctl("cert", "revoke", serial, "--reason", "test");
    assert.equal(revoked.code, 0, revoked.stderr);
    // Seconds, not the connection's hour: 15 s leaves room for a loaded machine.
    const code = await Promise.race([
      ended,
      new Promise<number>((r) => setTimeout(() => r(-1), 15_000)),
    ]);
    assert.equal(code, grpc.status.UNAUTHENTICATED, "the stream was closed");
    assert.equal(
      (await rawUnary(ch, REGISTER, register("node-50"))).error?.code,
      grpc.status.UNAUTHENTICATED,
    );
    ch.close();
  });

  it("revoking a certificate also revokes the ones it renewed into", async () => {
    const { token, caFingerprint } = await tokenFor("node-61");
    const nodeDir = join(dir, "node-61");
    assert.equal((await enrollNode(token, caFingerprint, nodeDir)).code, 0);
    const original = new X509Certificate(readFileSync(join(nodeDir, "node.crt"))).serialNumber;
    assert.equal(
      (
        await runProcess(process.execPath, [
          AGENT_BIN,
          "renew",
          "--server",
          daemon.grpcAddress,
          "--dir",
          nodeDir,
        ])
      ).code,
      0,
    );
    assert.equal((await hvctl("cert", "revoke", original, "--reason", "stolen")).code, 0);
    const ch = nodeChannel(daemon.grpcAddress, nodeDir);
    const code = await eventually(
      async () => (await rawUnary(ch, REGISTER, register("node-61"))).error?.code ?? false,
    ).catch(() => 0);
    ch.close();
    assert.equal(
      code,
      grpc.status.UNAUTHENTICATED,
      "the renewed certificate is revoked with its original",
    );
  });

  it("never writes tokens or private keys to the logs or the audit trail", async () => {
    const { token } = await tokenFor("node-59");
    const secret = token.slice(21); // after "dvt_<16 hex>_"; the secret itself may contain "_"
    const csr = await createCsr("x");
    const { ch, svc } = enrollClient();
    await svc.enroll({ token, csrPem: csr.csrPem });
    ch.close();
    const audit = readFileSync(join(dir, "audit.log"), "utf8");
    const logs = JSON.stringify(daemon.logs) + daemon.stderr();
    for (const text of [audit, logs]) {
      assert.ok(!text.includes(secret), "no token secret");
      assert.ok(!text.includes("PRIVATE KEY"), "no key material");
      assert.ok(!text.includes(csr.csrPem.split("\n")[1] as string), "no CSR");
    }
    assert.match(audit, /"method":"Enroll"/, "enrollment is audited");
    assert.match(audit, /"method":"CreateEnrollmentToken"/);
  });

  it("lets an operator issue a service certificate whose key is made locally", async () => {
    const out = join(dir, "panel");
    const r = await hvctl(
      "cert",
      "issue",
      "--cn",
      "panel",
      "--usage",
      "server",
      "--san",
      "panel.example,127.0.0.1",
      "--ttl",
      "60d",
      "--out",
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const cert = new X509Certificate(readFileSync(join(out, "panel.crt")));
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
    assert.ok(cert.checkHost("panel.example") && cert.checkIP("127.0.0.1"));
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(join(out, "panel.key")))));
    assert.equal(statSync(join(out, "panel.key")).mode & 0o777, 0o600);
    const list = await hvctl("cert", "list", "--subject", "panel");
    assert.match(list.stdout, /\spanel\s+server\s.*valid\s+admin/);
    const operator = await hvctl(
      "--context",
      "dev-operator",
      "cert",
      "issue",
      "--cn",
      "x",
      "--client",
      "--out",
      join(dir, "x2"),
    );
    assert.equal(operator.code, 4, "operators do not hold pki:cert:issue");
  });

  it("locks a token whose id is guessed, and no other token from the same address", async () => {
    const { ch, svc } = enrollClient();
    const csr = await createCsr("x");
    const guessed = await tokenFor("node-60");
    const good = await tokenFor("node-61");
    const guessedId = guessed.token.split("_")[1] as string;
    for (let i = 0; i < 12; i++) {
      await svc
        .enroll({ token: `dvt_${"1".repeat(16)}_${"g".repeat(43)}`, csrPem: csr.csrPem })
        .catch(() => undefined);
      await svc
        .enroll({ token: `dvt_${guessedId}_${"g".repeat(43)}`, csrPem: csr.csrPem })
        .catch(() => undefined);
    }
    await assert.rejects(
      svc.enroll({ token: guessed.token, csrPem: csr.csrPem }),
      (e: grpc.ServiceError) => e.code === 16,
      "the guessed token is locked even with its secret",
    );
    const ok = await svc.enroll({ token: good.token, csrPem: csr.csrPem });
    assert.match(
      ok.certificatePem,
      /BEGIN CERTIFICATE/,
      "another token from the same address enrolls",
    );
    ch.close();
  });
});
