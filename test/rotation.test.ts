import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect } from "node:tls";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { devDaemonArgs, startDaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

const DAY = 86_400_000;

function servedSerial(address: string, caPem: string): Promise<string> {
  const at = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const s = connect(
      {
        host: address.slice(0, at),
        port: Number(address.slice(at + 1)),
        ca: caPem,
        servername: "localhost",
        ALPNProtocols: ["h2"],
      },
      () => {
        resolve(s.getPeerX509Certificate()?.serialNumber ?? "");
        s.destroy();
      },
    );
    s.once("error", reject);
  });
}

describe("server certificate rotation", () => {
  it("renews itself two thirds into its life and picks up replaced files, with zero failed calls under load", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "dv-rotate-"));
    const args = devDaemonArgs(dir);
    const first = await startDaemonProcess(args);
    first.proc.kill("SIGTERM");
    await first.exited;
    const caPem = readFileSync(join(dir, "pki", "ca.crt"), "utf8");
    const ca = await loadCertificateAuthority({
      certPem: caPem,
      keyPem: readFileSync(join(dir, "pki", "ca.key"), "utf8"),
    });
    // Issued 25 of its 30 days ago: past two thirds of its life plus the most jitter (5%).
    const old = await ca.issue({
      commonName: "localhost",
      usage: "server",
      altNames: ["localhost", "127.0.0.1"],
      validityDays: 30,
      now: new Date(Date.now() - 25 * DAY),
    });
    const tlsDir = join(dir, "tls");
    mkdirSync(tlsDir);
    writeFileSync(join(tlsDir, "server.key"), old.keyPem, { mode: 0o600 });
    writeFileSync(join(tlsDir, "server.crt"), `${old.certPem.trimEnd()}\n${caPem}`);
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(
      cfg,
      `tls:\n  cert: ${join(tlsDir, "server.crt")}\n  key: ${join(tlsDir, "server.key")}\nrateLimit:\n  perSource:\n    ratePerSecond: 100000\n    burst: 100000\n  perPrincipal:\n    ratePerSecond: 100000\n    burst: 100000\n`,
    );
    const d = await startDaemonProcess([...args, "--config", cfg]);
    const ch = openChannel({ ...resolveContext(join(dir, "hvctl.yaml")), server: d.grpcAddress });
    const nodes = createServiceClient(NodeService, ch);
    let ok = 0;
    let failed = 0;
    const errors = new Map<string, number>();
    let stop = false;
    const load = Array.from({ length: 4 }, async () => {
      while (!stop && ok + failed < 200_000) {
        await nodes.listNodes({}).then(
          () => ok++,
          (e: { code?: number; details?: string }) => {
            failed++;
            errors.set(`${e.code} ${e.details}`, (errors.get(`${e.code} ${e.details}`) ?? 0) + 1);
          },
        );
      }
    });
    try {
      const oldSerial = new X509Certificate(old.certPem).serialNumber;
      await eventually(
        () =>
          assert.ok(
            d.logs.some((l) => l.msg === "server certificate renewed from the local CA"),
            "renewed itself",
          ),
        { timeoutMs: 15_000 },
      );
      await eventually(
        async () =>
          assert.notEqual(
            await servedSerial(d.grpcAddress, caPem),
            oldSerial,
            "serves the renewed certificate",
          ),
        { timeoutMs: 15_000 },
      );
      const renewed = new X509Certificate(readFileSync(join(tlsDir, "server.crt")));
      assert.ok(Date.parse(renewed.validTo) - Date.now() > 29 * DAY, "a fresh lifetime");

      // An operator replaces the files: no signal needed.
      const manual = await ca.issue({
        commonName: "localhost",
        usage: "server",
        altNames: ["localhost", "127.0.0.1"],
        validityDays: 60,
      });
      writeFileSync(join(tlsDir, "server.key.new"), manual.keyPem, { mode: 0o600 });
      writeFileSync(join(tlsDir, "server.crt.new"), `${manual.certPem.trimEnd()}\n${caPem}`);
      renameSync(join(tlsDir, "server.key.new"), join(tlsDir, "server.key"));
      renameSync(join(tlsDir, "server.crt.new"), join(tlsDir, "server.crt"));
      const manualSerial = new X509Certificate(manual.certPem).serialNumber;
      await eventually(
        async () =>
          assert.equal(
            await servedSerial(d.grpcAddress, caPem),
            manualSerial,
            "picked up replaced files",
          ),
        { timeoutMs: 10_000 },
      );
      const metrics = await (await fetch(`http://${d.httpAddress}/metrics`)).text();
      const expiry = Number(
        /debvisor_certificate_expiry_seconds\{certificate="server"\} (\d+)/.exec(metrics)?.[1],
      );
      assert.ok(expiry > 59 * 86_400 && expiry <= 60 * 86_400, `expiry metric ${expiry}`);
    } finally {
      stop = true;
      await Promise.all(load);
      ch.close();
      d.proc.kill("SIGTERM");
      await d.exited;
    }
    t.diagnostic(
      `${ok} calls during two rotations, ${failed} failed ${JSON.stringify([...errors])}`,
    );
    assert.ok(ok > 50, "the load ran");
    assert.equal(failed, 0);
  });
});
