import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { type ClientHttp2Session, connect as h2connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { openChannel, resolveContext } from "../src/client/index.js";
import { silentLogger } from "../src/core/index.js";
import { GetNodeRequestSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { parseConfig, startRpcServer } from "../src/server/index.js";
import {
  DAEMON_BIN,
  devDaemonArgs,
  HVCTL_BIN,
  runProcess,
  startDaemonProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { rawUnary } from "./helpers/grpc-client.js";
import { createTestPki } from "./helpers/pki.js";
import { eventually } from "./helpers/store-conformance.js";

const REGISTER = "/debvisor.v1.NodeService/RegisterNode";
const GET_NODE = "/debvisor.v1.NodeService/GetNode";
const register = (id: string) =>
  Buffer.from(
    toBinary(NodeInfoSchema, create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` })),
  );
const getNode = (id: string) =>
  Buffer.from(toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id: { id } })));
const adminChannel = (dir: string, address: string) =>
  openChannel({ ...resolveContext(join(dir, "hvctl.yaml"), "dev"), server: address });
const readyz = async (http: string) => {
  const res = await fetch(`http://${http}/readyz`);
  return { status: res.status, body: await res.text() };
};

describe("one daemon per data directory", () => {
  it("refuses a second daemon on the same directory, which touches nothing; the first keeps working", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-lock-"));
    const first = await startDaemonProcess(devDaemonArgs(dir));
    const admin = adminChannel(dir, first.grpcAddress);
    try {
      assert.equal((await rawUnary(admin, REGISTER, register("n-one"))).error, undefined);
      const audit = join(dir, "audit.log");
      const before = { audit: readFileSync(audit), db: statSync(join(dir, "state.db")).mtimeMs };
      // Other ports, same directory: the README's failover demo does exactly this.
      const second = await runProcess(process.execPath, [DAEMON_BIN, ...devDaemonArgs(dir)], {
        timeoutMs: 20_000,
      });
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, new RegExp(`data directory in use by pid ${first.proc.pid}`));
      assert.deepEqual(readFileSync(audit), before.audit, "the audit trail is untouched");
      assert.equal(
        statSync(join(dir, "state.db")).mtimeMs,
        before.db,
        "the state file is untouched",
      );
      // The first daemon still writes, and its trail still verifies.
      assert.equal((await rawUnary(admin, REGISTER, register("n-two"))).error, undefined);
      const verify = await runProcess(process.execPath, [
        HVCTL_BIN,
        "--config",
        join(dir, "hvctl.yaml"),
        "audit",
        "verify",
        audit,
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    } finally {
      admin.close();
      first.kill();
      await first.exited;
    }
    // A crashed holder (kill -9 above) leaves its lock behind; the next start takes it over.
    const again = await startDaemonProcess(devDaemonArgs(dir));
    again.kill();
    await again.exited;
  });
});

describe("/readyz and grpc.health.v1", () => {
  it("say 503 with the reason while the disk is full, and recover by themselves", async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip("needs root to mount a small tmpfs");
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), "dv-readyz-"));
    const mnt = mkdtempSync(join(tmpdir(), "dv-readyz-mnt-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt]);
    const cfg = join(dir, "rpcd.yaml");
    // Both the audit trail and the state file on the small disk; reads stay allowed.
    writeFileSync(
      cfg,
      JSON.stringify({
        audit: { path: join(mnt, "audit.log"), allowReadsWhenFailing: true },
        store: { path: join(mnt, "state.db") },
      }),
    );
    const d = await startDaemonProcess([...devDaemonArgs(dir), "--config", cfg]);
    const admin = adminChannel(dir, d.grpcAddress);
    const filler = join(mnt, "filler");
    try {
      assert.deepEqual(await readyz(d.httpAddress), { status: 200, body: "ready\n" });
      assert.equal((await rawUnary(admin, REGISTER, register("n-before"))).error, undefined);
      try {
        writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024));
      } catch {
        // ENOSPC: the filler took every byte there was.
      }
      // The probe finds the store full on its own; the audit file's last page may
      // still hold a few records, so call until the trail refuses.
      let refused = await rawUnary(admin, REGISTER, register("n-full-0"));
      for (
        let i = 1;
        i < 200 && refused.trailers?.get("debvisor-error-reason")[0] !== "AUDIT_UNAVAILABLE";
        i++
      )
        refused = await rawUnary(admin, REGISTER, register(`n-full-${i}`));
      const failing = await eventually(async () => {
        const r = await readyz(d.httpAddress);
        return (
          r.status === 503 &&
          /state store cannot be written/.test(r.body) &&
          /audit trail cannot be written/.test(r.body)
        );
      }, 10_000);
      const body = (await readyz(d.httpAddress)).body;
      assert.ok(failing, body);
      assert.match(body, /^not ready: /);
      const health = await rawUnary(admin, "/grpc.health.v1.Health/Check", Buffer.alloc(0));
      assert.equal(health.error, undefined);
      // HealthCheckResponse{status: NOT_SERVING (2)}
      assert.deepEqual([...(health.response ?? [])], [0x08, 0x02]);
      // audit.allowReadsWhenFailing: a read is answered, a write refused.
      const read = await rawUnary(admin, GET_NODE, getNode("n-before"));
      assert.equal(read.error, undefined, read.error?.message);
      const write = await rawUnary(admin, REGISTER, register("n-refused"));
      assert.equal(write.error?.code, grpc.status.UNAVAILABLE);
      rmSync(filler);
      // No call needed: the probe notices the room.
      const back = await eventually(
        async () => (await readyz(d.httpAddress)).status === 200,
        15_000,
      );
      assert.ok(back, (await readyz(d.httpAddress)).body);
      const serving = await rawUnary(admin, "/grpc.health.v1.Health/Check", Buffer.alloc(0));
      assert.deepEqual([...(serving.response ?? [])], [0x08, 0x01]);
    } finally {
      admin.close();
      d.kill();
      await d.exited;
      execFileSync("umount", [mnt]);
    }
  });
});

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
      await new Promise((r) => setTimeout(r, 3500));
      const fresh = adminChannel(dir, d.grpcAddress);
      const after = await rawUnary(fresh, LIST_NODES, Buffer.alloc(0));
      fresh.close();
      assert.equal(after.error, undefined, after.error?.message);
      const metrics = await (await fetch(`http://${d.httpAddress}/metrics`)).text();
      const dropped = (reason: string) =>
        Number(
          new RegExp(`debvisor_rpc_connections_dropped_total\\{reason="${reason}"\\} (\\d+)`).exec(
            metrics,
          )?.[1] ?? "NaN",
        );
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
        12_000,
      );
      assert.ok(summed, "the drops are logged");
      const lines = d.logs.filter((l) => /dropped before/.test(String(l.msg))).length;
      assert.ok(lines <= 3, `${lines} log lines for the drops`);
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
      const open = () =>
        new Promise<void>((resolve) => {
          const s = h2connect(`https://${d.grpcAddress}`, { ca, servername: "localhost" });
          sessions.push(s);
          s.on("error", () => resolve());
          s.on("close", () => resolve());
          s.on("connect", () => resolve());
        });
      // More idle connections than the fd limit allows.
      for (let i = 0; i < 500; i += 50) await Promise.all(Array.from({ length: 50 }, open));
      const health = await fetch(`http://${d.httpAddress}/healthz`, {
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(health.status, 200);
      const ready = await fetch(`http://${d.httpAddress}/readyz`, {
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(ready.status, 200, await ready.text());
      assert.equal((await rawUnary(admin, LIST_NODES, Buffer.alloc(0))).error, undefined);
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
});
