import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { type ClientHttp2Session, connect as h2connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { resolveContext } from "../src/client/index.js";
import { silentLogger } from "../src/core/index.js";
import { parseConfig, startRpcServer } from "../src/server/index.js";
import { adminChannel } from "./helpers/audit-daemon.js";
import { devDaemonArgs, startDaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary } from "./helpers/grpc-client.js";
import { createTestPki } from "./helpers/pki.js";

describe("TLS 1.2 when tls.minVersion allows it", () => {
  it("offers only ECDHE key exchange with AEAD ciphers", async () => {
    const pki = await createTestPki();
    const config = parseConfig({ tls: { minVersion: "TLSv1.2" } });
    const server = await startRpcServer({
      listen: "127.0.0.1:0",
      tls: { certPem: pki.server.certPem, keyPem: pki.server.keyPem, clientCaPem: pki.ca.certPem },
      tlsOptions: config.tls,
      limits: config.limits,
      services: [],
      stages: [],
      observer: { onStart() {}, onEnd() {} },
      logger: silentLogger,
    });
    const [host, port] = server.address.split(":");
    const handshake = (ciphers: string) =>
      new Promise<string>((resolve) => {
        const socket = tlsConnect({
          host,
          port: Number(port),
          ca: pki.ca.certPem,
          servername: "localhost",
          minVersion: "TLSv1.2",
          maxVersion: "TLSv1.2",
          ciphers,
          ALPNProtocols: ["h2"],
        });
        socket.once("secureConnect", () => {
          resolve(`connected ${socket.getCipher().standardName}`);
          socket.destroy();
        });
        socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
    try {
      assert.equal(
        await handshake("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "connected TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
      );
      assert.match(await handshake("ECDHE-ECDSA-CHACHA20-POLY1305"), /^connected /);
      // CBC, even with ECDHE and SHA-2; RSA key exchange; CBC with SHA-1.
      for (const refused of [
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES128-SHA",
      ])
        assert.doesNotMatch(await handshake(refused), /^connected/, refused);
    } finally {
      await server.shutdown(1000);
    }
  });
});

const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";
const rssMib = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

describe("a flood of unauthenticated slow streams", () => {
  it("is bounded: memory stays low, an authenticated client keeps working, drops are counted and logged in sum", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "dv-flood-"));
    const d = await startDevDaemon(dir, { limits: { firstMessageTimeoutMs: 3000 } });
    const pid = d.proc.pid as number;
    const admin = adminChannel(dir, d.grpcAddress);
    const ca = resolveContext(join(dir, "hvctl.yaml"), "dev").caPem;
    const sessions: ClientHttp2Session[] = [];
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMib(pid));
    }, 100);
    try {
      assert.equal((await rawUnary(admin, LIST_NODES, Buffer.alloc(0))).error, undefined);
      const before = rssMib(pid);
      // 2,000 connections, each sending headers and two bytes of a five-byte gRPC prefix, then nothing.
      const FLOOD = 2000;
      let opened = 0;
      const slow = () =>
        new Promise<void>((resolve) => {
          const s = h2connect(`https://${d.grpcAddress}`, { ca, servername: "localhost" });
          sessions.push(s);
          s.on("error", () => resolve());
          s.on("close", () => resolve());
          s.on("connect", () => {
            opened++;
            const req = s.request({
              ":method": "POST",
              ":path": LIST_NODES,
              "content-type": "application/grpc",
              te: "trailers",
            });
            req.on("error", () => {});
            req.write(Buffer.from([0, 0]));
            resolve();
          });
        });
      for (let i = 0; i < FLOOD; i += 100) {
        await Promise.all(Array.from({ length: 100 }, slow));
        peak = Math.max(peak, rssMib(pid));
      }
      // Under the flood, the client that was already connected is served.
      const started = Date.now();
      const during = await rawUnary(admin, LIST_NODES, Buffer.alloc(0));
      assert.equal(during.error, undefined, during.error?.message);
      const latency = Date.now() - started;
      assert.equal((await fetch(`http://${d.httpAddress}/healthz`)).status, 200);
      // Past the first-message deadline the slow ones are gone, and a new client gets in.
      let metrics = "";
      const dropped = (reason: string) =>
        Number(
          new RegExp(`debvisor_rpc_connections_dropped_total\\{reason="${reason}"\\} (\\d+)`).exec(
            metrics,
          )?.[1] ?? "NaN",
        );
      await eventually(async () => {
        metrics = await (await fetch(`http://${d.httpAddress}/metrics`)).text();
        assert.ok(dropped("first-message-deadline") > 0, "slow ones dropped at the deadline");
        const fresh = adminChannel(dir, d.grpcAddress);
        const after = await rawUnary(fresh, LIST_NODES, Buffer.alloc(0));
        fresh.close();
        assert.equal(after.error, undefined, after.error?.message);
      });
      t.diagnostic(
        `RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB under ${FLOOD} slow connections (${opened} got a TLS session); ` +
          `an authenticated call under the flood took ${latency} ms; dropped per-address ${dropped("per-address")}, ` +
          `at the first-message deadline ${dropped("first-message-deadline")}, total ${dropped("total")}`,
      );
      assert.ok(peak < 300 && peak - before < 100, `RSS ${before} -> ${peak} MiB`);
      assert.ok(dropped("per-address") > 0);
      assert.ok(dropped("first-message-deadline") > 0);
      const summed = await eventually(
        async () =>
          d.logs.some((l) => /dropped before they sent a first message/.test(String(l.msg))),
        { timeoutMs: 12_000 },
      );
      assert.ok(summed, "the drops are logged");
      // Summed: one line per 10 s, not one per drop.
      const lines = d.logs.filter((l) => /dropped before/.test(String(l.msg))).length;
      const drops = dropped("per-address") + dropped("first-message-deadline") + dropped("total");
      assert.ok(lines * 100 <= drops, `${lines} log lines for ${drops} drops`);
    } finally {
      clearInterval(sampler);
      for (const s of sessions) s.destroy();
      admin.close();
      d.kill();
      await d.exited;
    }
  });
});

describe("a flood under a low open-file limit", () => {
  it("leaves descriptors for the health endpoints and the connected client", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "dv-fdflood-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(cfg, JSON.stringify({ limits: { maxConnectionsPerAddress: 10_000 } }));
    const d = await startDaemonProcess([...devDaemonArgs(dir), "--config", cfg], {
      wrapper: ["prlimit", "--nofile=400"],
    });
    const admin = adminChannel(dir, d.grpcAddress);
    const ca = resolveContext(join(dir, "hvctl.yaml"), "dev").caPem;
    const sessions: ClientHttp2Session[] = [];
    try {
      assert.equal((await rawUnary(admin, LIST_NODES, Buffer.alloc(0))).error, undefined);
      // More idle connections than the fd limit allows.
      await floodIdle(`https://${d.grpcAddress}`, ca, sessions);
      await assertStillServing(d.httpAddress, admin);
      const metrics = await (await fetch(`http://${d.httpAddress}/metrics`)).text();
      const total = /debvisor_rpc_connections_dropped_total\{reason="total"\} (\d+)/.exec(
        metrics,
      )?.[1];
      t.diagnostic(`500 idle connections at nofile=400: ${total} dropped at the total limit`);
      assert.ok(Number(total) > 0);
    } finally {
      for (const s of sessions) s.destroy();
      admin.close();
      d.kill();
      await d.exited;
    }
  });
  it("counts the panel port's connections toward the same bounds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-fdflood-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(
      cfg,
      JSON.stringify({
        limits: { maxConnectionsPerAddress: 10_000 },
        panel: { listen: "127.0.0.1:0" },
      }),
    );
    const d = await startDaemonProcess([...devDaemonArgs(dir), "--config", cfg], {
      wrapper: ["prlimit", "--nofile=400"],
    });
    const admin = adminChannel(dir, d.grpcAddress);
    const ca = resolveContext(join(dir, "hvctl.yaml"), "dev").caPem;
    const panelUrl = String(d.logs.find((l) => l.msg === "serving")?.panelUrl);
    const sessions: ClientHttp2Session[] = [];
    try {
      assert.equal((await rawUnary(admin, LIST_NODES, Buffer.alloc(0))).error, undefined);
      // An outsider's idle connections to the panel port, more than the fd limit allows:
      // before, the panel took them all and the daemon had no descriptor left.
      await floodIdle(panelUrl, ca, sessions);
      await assertStillServing(d.httpAddress, admin);
    } finally {
      for (const s of sessions) s.destroy();
      admin.close();
      d.kill();
      await d.exited;
    }
  });
});

/** Opens 500 idle HTTP/2 connections to `url` (50 at a time), each kept in `sessions`. */
async function floodIdle(url: string, ca: string, sessions: ClientHttp2Session[]): Promise<void> {
  const open = () =>
    new Promise<void>((resolve) => {
      const s = h2connect(url, { ca, servername: "localhost" });
      sessions.push(s);
      s.on("error", () => resolve());
      s.on("close", () => resolve());
      s.on("connect", () => resolve());
    });
  for (let i = 0; i < 500; i += 50) await Promise.all(Array.from({ length: 50 }, open));
}

/** /healthz and /readyz answer 200 and an admin's ListNodes succeeds. */
async function assertStillServing(
  httpAddress: string,
  admin: ReturnType<typeof adminChannel>,
): Promise<void> {
  const health = await fetch(`http://${httpAddress}/healthz`, {
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(health.status, 200);
  const ready = await fetch(`http://${httpAddress}/readyz`, { signal: AbortSignal.timeout(5000) });
  assert.equal(ready.status, 200, await ready.text());
  assert.equal((await rawUnary(admin, LIST_NODES, Buffer.alloc(0))).error, undefined);
}
