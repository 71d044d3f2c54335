import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect as http2Connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { createGzip } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { ListNodesRequestSchema, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { ReplicationState, StorageService } from "../src/gen/debvisor/v1/storage_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../src/gen/grpc/health/v1/health_pb.js";
import {
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import {
  type DaemonProcess,
  devDaemonArgs,
  HVCTL_BIN,
  runProcess,
  startDaemonProcess,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { testChannel } from "./helpers/grpc-client.js";
import { type NotifySocket, startNotifySocket } from "./helpers/notify-socket.js";

const MIB = 1024 * 1024;
const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";
const devArgs = devDaemonArgs;

/** Peak resident memory of a process, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1]) * 1024;
}

/** A gRPC frame: 1 byte compressed flag, 4 bytes length, the message. */
function grpcFrame(body: Buffer, compressed = false): Buffer {
  const header = Buffer.alloc(5);
  header[0] = compressed ? 1 : 0;
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** gzip of `size` zero bytes, made in chunks so the test itself stays small. */
async function gzipBomb(size: number): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const parts: Buffer[] = [];
  gz.on("data", (d: Buffer) => parts.push(d));
  const done = new Promise((resolve) => gz.once("end", resolve));
  const zeros = Buffer.alloc(MIB);
  for (let written = 0; written < size; written += MIB) {
    if (!gz.write(zeros)) await new Promise((r) => gz.once("drain", r));
  }
  gz.end();
  await done;
  return Buffer.concat(parts);
}

/** Opens a raw HTTP/2 gRPC stream with mTLS; resolves with status, trailers and body when it ends. */
function rawStream(
  address: string,
  tls: { ca: string; cert: string; key: string },
  headers: Record<string, string> = {},
) {
  const session = http2Connect(`https://${address}`, { ...tls, servername: "localhost" });
  session.on("error", () => {});
  const stream = session.request({
    ":method": "POST",
    ":path": LIST_NODES,
    "content-type": "application/grpc",
    te: "trailers",
    ...headers,
  });
  const chunks: Buffer[] = [];
  stream.on("data", (d: Buffer) => chunks.push(d));
  const result = new Promise<{
    status: string | undefined;
    message: string | undefined;
    body: Buffer;
  }>((resolve) => {
    let status: string | undefined;
    let message: string | undefined;
    stream.on("response", (h) => {
      if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
    });
    stream.on("trailers", (t) => {
      status = String(t["grpc-status"]);
      message =
        t["grpc-message"] === undefined ? undefined : decodeURIComponent(String(t["grpc-message"]));
    });
    stream.on("close", () => {
      session.close();
      resolve({ status, message, body: Buffer.concat(chunks) });
    });
    stream.on("error", () => {});
  });
  return { stream, result };
}

describe("debvisor-rpcd --dev, as a child process", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let notify: NotifySocket;
  let hvctlConfig: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-e2e-"));
    notify = await startNotifySocket();
    daemon = await startDaemonProcess(devArgs(dir), {
      env: { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: "1000000" },
    });
    hvctlConfig = join(dir, "hvctl.yaml");
  });
  after(() => {
    daemon?.kill();
    notify?.close();
  });

  const admin = () => {
    const ctx = resolveContext(hvctlConfig);
    return { ctx, tls: { ca: ctx.caPem, cert: ctx.certPem ?? "", key: ctx.keyPem ?? "" } };
  };

  it("tells systemd READY=1 only once it serves", async () => {
    const ready = await notify.waitFor("READY=1");
    assert.match(ready, /STATUS=serving on 127\.0\.0\.1:\d+/);
    const res = await fetch(`http://${daemon.httpAddress}/readyz`);
    assert.equal(res.status, 200);
    assert.equal((await fetch(`http://${daemon.httpAddress}/healthz`)).status, 200);
  });

  it("pings the systemd watchdog when WATCHDOG_USEC asks for it", async () => {
    assert.match(await notify.waitFor("WATCHDOG=1", 5000), /^MAINPID=\d+\nWATCHDOG=1$/);
  });

  it("answers grpc.health.v1 Check without a client certificate", async () => {
    const ch = testChannel(daemon.grpcAddress, { caPem: admin().ctx.caPem });
    const health = createServiceClient(Health, ch);
    assert.equal(
      (await health.check({ service: "" })).status,
      HealthCheckResponse_ServingStatus.SERVING,
    );
    assert.equal(
      (await health.check({ service: "debvisor.v1.NodeService" })).status,
      HealthCheckResponse_ServingStatus.SERVING,
    );
    await assert.rejects(
      health.check({ service: "no.such.Service" }),
      (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
    );
    ch.close();
  });

  it("lists at least three simulated nodes over mTLS with the written hvctl context", async () => {
    const { ctx } = admin();
    const ch = openChannel(ctx);
    const list = await createServiceClient(NodeService, ch).listNodes({});
    ch.close();
    assert.ok(list.nodes.length >= 3);
    assert.ok(
      list.nodes.every((n) => (n.health?.vms.length ?? 0) > 0),
      "every node reports its VMs",
    );
  });

  it("gives the simulated cluster datasets and a replication job per ZFS disk, which it runs", async () => {
    const ch = openChannel(admin().ctx);
    const storage = createServiceClient(StorageService, ch);
    try {
      const jobs = (await storage.listReplicationJobs({})).jobs;
      assert.ok(jobs.length > 0, "a job per ZFS disk");
      const dataset = jobs[0]?.plan?.dataset;
      assert.ok(
        (await storage.listSnapshots({ dataset })).snapshots.length >= 3,
        "daily snapshots",
      );
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 20_000);
      let moving = false;
      try {
        for await (const s of storage.watchReplication({}, { signal: abort.signal })) {
          if (s.state === ReplicationState.REPL_STATE_SUCCESS || s.bytesTransferred > 0n) {
            moving = true;
            abort.abort();
          }
        }
      } catch (err) {
        if ((err as grpc.ServiceError).code !== grpc.status.CANCELLED) throw err;
      } finally {
        clearTimeout(timer);
      }
      assert.ok(moving, "the scheduler started sending within 20 s");
    } finally {
      ch.close();
    }
  });

  it("enrolls its simulated nodes with tokens, like real nodes", async () => {
    for (const id of ["node-01", "node-02", "node-03"]) {
      const cert = new X509Certificate(readFileSync(join(dir, "nodes", id, "node.crt")));
      assert.equal(cert.subject, `CN=${id}`);
      assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"]);
    }
    const list = await runProcess(process.execPath, [
      HVCTL_BIN,
      "--config",
      hvctlConfig,
      "cert",
      "list",
    ]);
    for (const id of ["node-01", "node-02", "node-03"])
      assert.match(list.stdout, new RegExp(`\\s${id}\\s+client\\s.*valid\\s+admin`));
    assert.ok(
      daemon.logs.filter((l) => l.msg === "dev mode: simulated node enrolled").length === 3,
    );
  });

  it("prints the nodes with `hvctl --config DIR/hvctl.yaml node list`", async () => {
    const { code, stdout, stderr } = await runProcess(process.execPath, [
      HVCTL_BIN,
      "--config",
      hvctlConfig,
      "node",
      "list",
    ]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^ID\s+HOSTNAME/);
    for (const id of ["node-01", "node-02", "node-03"])
      assert.match(stdout, new RegExp(`^${id}\\s.*Ready`, "m"));
    assert.equal(stderr, "");
  });

  it("describes its services through server reflection", async () => {
    const { ctx } = admin();
    const ch = openChannel(ctx);
    const call = ch.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (m: Uint8Array) => Buffer.from(m),
      (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
    );
    const responses: ReturnType<typeof fromBinary<typeof ServerReflectionResponseSchema>>[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (r) => responses.push(r));
      call.on("end", resolve);
      call.on("error", reject);
    });
    const send = (messageRequest: object) =>
      call.write(
        toBinary(
          ServerReflectionRequestSchema,
          create(ServerReflectionRequestSchema, { messageRequest } as never),
        ),
      );
    send({ case: "listServices", value: "" });
    send({ case: "fileContainingSymbol", value: "debvisor.v1.NodeService.ListNodes" });
    send({ case: "fileContainingSymbol", value: "debvisor.v1.NoSuchThing" });
    call.end();
    await done;
    ch.close();
    const [list, file, missing] = responses.map((r) => r.messageResponse);
    assert.equal(list?.case, "listServicesResponse");
    const names =
      list?.case === "listServicesResponse" ? list.value.service.map((s) => s.name) : [];
    for (const s of [
      "debvisor.v1.NodeService",
      "debvisor.v1.StorageService",
      "grpc.health.v1.Health",
    ])
      assert.ok(names.includes(s), s);
    assert.equal(file?.case, "fileDescriptorResponse");
    const protos =
      file?.case === "fileDescriptorResponse"
        ? file.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b))
        : [];
    const node = protos.find((p) => p.name === "debvisor/v1/node.proto");
    assert.ok(
      node?.service
        .find((s) => s.name === "NodeService")
        ?.method.some((m) => m.name === "ListNodes"),
    );
    assert.ok(
      protos.some((p) => p.name === "debvisor/v1/common.proto"),
      "dependencies are included",
    );
    assert.equal(missing?.case, "errorResponse");
  });

  it("counts calls by method and code on /metrics", async () => {
    const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
    assert.match(
      text,
      /debvisor_rpc_calls_total\{service="debvisor.v1.NodeService",method="ListNodes",code="OK"\} [1-9]/,
    );
    assert.match(text, /debvisor_rpc_call_duration_seconds_bucket/);
    assert.match(text, /debvisor_rpc_calls_in_flight 0/);
    assert.match(text, /debvisor_rpc_connections \d+/);
    for (const c of ["server", "client-ca", "cluster-ca"]) {
      assert.match(
        text,
        new RegExp(`debvisor_certificate_expiry_seconds\\{certificate="${c}"\\} \\d+`),
      );
    }
  });

  it("rejects a gzip bomb with RESOURCE_EXHAUSTED without inflating it", async (t) => {
    const bomb = await gzipBomb(256 * MIB);
    assert.ok(bomb.length < MIB, "the compressed bomb itself fits under the limit");
    const before = peakRss(daemon.proc.pid as number);
    const { stream, result } = rawStream(daemon.grpcAddress, admin().tls, {
      "grpc-encoding": "gzip",
    });
    stream.end(grpcFrame(bomb, true));
    const { status } = await result;
    const growth = peakRss(daemon.proc.pid as number) - before;
    t.diagnostic(
      `gzip bomb: ${bomb.length} bytes inflating to 256 MiB; daemon peak RSS grew ${(growth / MIB).toFixed(2)} MiB`,
    );
    assert.equal(status, String(grpc.status.RESOURCE_EXHAUSTED));
    // 256 MiB would be inflated by a naive server; the 1 MiB limit allows a few MiB of buffers.
    assert.ok(growth < 8 * MIB, `peak RSS grew by ${(growth / MIB).toFixed(1)} MiB`);
  });

  it("reloads its certificate on SIGHUP without dropping open connections", async () => {
    const { ctx } = admin();
    const ch = openChannel(ctx);
    const client = createServiceClient(NodeService, ch);
    await client.listNodes({});
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const [host, port] = daemon.grpcAddress.split(":");
        const s = tlsConnect(
          {
            host,
            port: Number(port),
            ca: ctx.caPem,
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
    const oldSerial = await served();
    const ca = await loadCertificateAuthority({
      certPem: readFileSync(join(dir, "pki", "ca.crt"), "utf8"),
      keyPem: readFileSync(join(dir, "pki", "ca.key"), "utf8"),
    });
    const fresh = await ca.issue({
      commonName: "localhost",
      usage: "server",
      altNames: ["localhost", "127.0.0.1"],
    });
    writeFileSync(join(dir, "pki", "server.key"), fresh.keyPem);
    writeFileSync(join(dir, "pki", "server.crt"), fresh.certPem);
    const reloaded = notify.messages.length;
    daemon.proc.kill("SIGHUP");
    await notify.waitFor("RELOADING=1");
    await eventually(() =>
      assert.ok(daemon.logs.some((l) => l.msg === "configuration and TLS files reloaded")),
    );
    assert.ok(notify.messages.length > reloaded);
    const newSerial = await served();
    assert.notEqual(newSerial, oldSerial);
    assert.equal(newSerial, new X509Certificate(fresh.certPem).serialNumber);
    assert.equal(
      (await client.listNodes({})).nodes.length >= 3,
      true,
      "the connection opened before the reload still works",
    );
    ch.close();
  });

  it("registers a node for the admin identity (kept for the restart below)", async () => {
    const ch = openChannel(admin().ctx);
    const ack = await createServiceClient(NodeService, ch).registerNode({
      id: { id: "node-99" },
      hostname: "hv99.example",
      zone: "zone-z",
      labels: { role: "persisted" },
    });
    ch.close();
    assert.equal(ack.message, "registered");
  });

  it("on SIGTERM, even sent twice, finishes the call in flight, tells systemd STOPPING=1 and exits 0", async () => {
    const { stream, result } = rawStream(daemon.grpcAddress, admin().tls);
    const frame = grpcFrame(
      Buffer.from(
        toBinary(ListNodesRequestSchema, create(ListNodesRequestSchema, { pageSize: 2 })),
      ),
    );
    await new Promise<void>((resolve, reject) =>
      stream.write(frame.subarray(0, 3), (err) => (err ? reject(err) : resolve())),
    );
    // The daemon has the call once it answers a PING sent after the call's first bytes went out:
    // it reads a connection's frames in order, and acknowledges a PING after those before it.
    await new Promise<void>((resolve, reject) =>
      stream.session?.ping((err) => (err ? reject(err) : resolve())),
    );
    daemon.proc.kill("SIGTERM");
    await notify.waitFor("STOPPING=1");
    // The log comes on stdout, the notification on a socket: either may be read first.
    await eventually(() =>
      assert.ok(daemon.logs.some((l) => l.msg === "shutting down: draining calls")),
    );
    assert.equal(
      (await fetch(`http://${daemon.httpAddress}/readyz`).then(
        (r) => r.status,
        () => 0,
      )) !== 200,
      true,
    );
    // An impatient operator: a second SIGTERM must not cut the drain short.
    daemon.proc.kill("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 200));
    stream.end(frame.subarray(3));
    const { status, body } = await result;
    assert.equal(status, "0");
    assert.ok(body.length > 5, "the response arrived");
    assert.equal(await daemon.exited, 0);
  });

  it("reuses the CA, certificates and state (SQLite) when restarted with the same data dir", async () => {
    const caBefore = readFileSync(join(dir, "pki", "ca.crt"), "utf8");
    const again = await startDaemonProcess(devArgs(dir));
    try {
      assert.equal(readFileSync(join(dir, "pki", "ca.crt"), "utf8"), caBefore);
      assert.ok(again.logs.some((l) => l.msg === "dev mode: reusing CA and certificates"));
      const ch = openChannel(resolveContext(hvctlConfig));
      const nodes = createServiceClient(NodeService, ch);
      assert.ok((await nodes.listNodes({})).nodes.length >= 4);
      const kept = await nodes.getNode({ id: { id: "node-99" } });
      assert.equal(
        kept.summary?.info?.hostname,
        "hv99.example",
        "state registered before the restart is still there",
      );
      assert.equal(kept.summary?.info?.labels.role, "persisted");
      const again99 = await nodes.registerNode({ id: { id: "node-99" }, hostname: "hv99.example" });
      assert.equal(again99.message, "updated", "the same identity still owns it");
      ch.close();
      again.proc.kill("SIGTERM");
      assert.equal(await again.exited, 0);
    } finally {
      again.kill();
    }
  });
});

describe("debvisor-rpcd start-up errors", () => {
  it("fails with exit code 2 naming an unknown configuration key", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-cfg-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(cfg, "listen: 127.0.0.1:0\nlimits:\n  maxRequestByts: 1024\n");
    const { code, stderr } = await runProcess(process.execPath, [
      join(HVCTL_BIN, "..", "debvisor-rpcd.js"),
      "--config",
      cfg,
    ]);
    assert.equal(code, 2);
    assert.match(stderr, /limits\.maxRequestByts: unknown key/);
  });

  it("refuses to start outside dev mode when the TLS files are missing, naming the default path", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-cfg-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(cfg, "listen: 127.0.0.1:0\nmetrics:\n  enabled: false\n");
    const { code, stderr } = await runProcess(
      process.execPath,
      [join(HVCTL_BIN, "..", "debvisor-rpcd.js"), "--config", cfg],
      {
        env: { RPC_TLS_CERT: "", RPC_TLS_KEY: "", RPC_TLS_CA: "" },
      },
    );
    assert.equal(code, 2);
    assert.match(stderr, /tls\.cert: file not found: \/etc\/debvisor\/rpc\/cert\.pem/);
  });
});
