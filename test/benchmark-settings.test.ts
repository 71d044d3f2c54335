import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { type DaemonProcess, startDaemonProcess } from "./helpers/daemon-process.js";
import { rawUnary, testChannel } from "./helpers/grpc-client.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";

const dirs: string[] = [];

/** Starts the daemon with a one-call rate limit and no role bindings, plus `extra` YAML. */
async function startWith(pki: TestPki, extra: string): Promise<DaemonProcess> {
  const dir = mkdtempSync(join(tmpdir(), "dv-benchset-"));
  dirs.push(dir);
  const cfg = join(dir, "rpcd.yaml");
  writeFileSync(
    cfg,
    [
      "listen: 127.0.0.1:0",
      `tls: {cert: ${pki.paths.cert}, key: ${pki.paths.key}, clientCa: ${pki.paths.ca}}`,
      `store: {path: ${join(dir, "state.db")}}`,
      `audit: {path: ${join(dir, "audit.log")}}`,
      "metrics: {enabled: false}",
      "rateLimit: {perSource: {ratePerSecond: 0.001, burst: 1}, perPrincipal: {ratePerSecond: 0.001, burst: 1}}",
      extra,
    ].join("\n"),
  );
  return startDaemonProcess(["--config", cfg]);
}

describe("benchmark settings of debvisor-rpcd", () => {
  let pki: TestPki;
  let stranger: { certPem: string; keyPem: string };
  const daemons: DaemonProcess[] = [];
  before(async () => {
    pki = await createTestPki();
    // A valid certificate for a principal bound to no role at all.
    stranger = await (await loadCertificateAuthority(pki.ca)).issue({
      commonName: "stranger",
      usage: "client",
    });
  });
  after(async () => {
    for (const d of daemons) {
      d.kill();
      await d.exited;
    }
    for (const dir of [...dirs, pki.dir]) rmSync(dir, { recursive: true, force: true });
  });

  const call = async (d: DaemonProcess) => {
    const ch = testChannel(d.grpcAddress, { caPem: pki.ca.certPem, ...stranger });
    try {
      return (await rawUnary(ch, LIST_NODES, Buffer.alloc(0))).error?.code ?? grpc.status.OK;
    } finally {
      ch.close();
    }
  };

  it("without them, authorization and rate limits apply", async () => {
    const d = await startWith(pki, "");
    daemons.push(d);
    assert.equal(await call(d), grpc.status.PERMISSION_DENIED);
    assert.equal(await call(d), grpc.status.RESOURCE_EXHAUSTED);
  });

  it("skipAuthorization and skipRateLimit leave those stages out, and say so in the log", async () => {
    const d = await startWith(pki, "benchmark: {skipAuthorization: true, skipRateLimit: true}");
    daemons.push(d);
    for (let i = 0; i < 3; i++) assert.equal(await call(d), grpc.status.OK);
    const warning = d.logs.find((l) => String(l.msg).startsWith("benchmark settings"));
    assert.deepEqual(
      { skipRateLimit: warning?.skipRateLimit, skipAuthorization: warning?.skipAuthorization },
      { skipRateLimit: true, skipAuthorization: true },
    );
  });
});
