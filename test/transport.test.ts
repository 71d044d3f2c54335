import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { anyIs, anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { createServiceClient } from "../src/client/index.js";
import { createInventory, createNodeService } from "../src/cluster/index.js";
import {
  attachEncoding,
  createManualClock,
  defineService,
  notImplemented,
  type ServiceBinding,
  silentLogger,
  validationStage,
} from "../src/core/index.js";
import { VMRefSchema } from "../src/gen/debvisor/v1/migration_pb.js";
import {
  GetNodeRequestSchema,
  ListNodesRequestSchema,
  NodeDetailSchema,
  NodeInfoSchema,
  NodeListSchema,
  NodeService,
  type NodeSummary,
  NodeSummarySchema,
} from "../src/gen/debvisor/v1/node_pb.js";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { BadRequestSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import { createMtlsAuthenticationStage } from "../src/security/index.js";
import { parseConfig, type RpcServer, startRpcServer } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { rawUnary, testChannel } from "./helpers/grpc-client.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";
const MIB = 1024 * 1024;

/** The lifecycle methods this test does not exercise. */
const unimplementedLifecycle = {
  createVm: notImplemented,
  startVm: notImplemented,
  stopVm: notImplemented,
  rebootVm: notImplemented,
  deleteVm: notImplemented,
  adoptVm: notImplemented,
  getOperation: notImplemented,
  async *watchOperation() {},
};

/** A VmService whose handlers fail the ways real code fails, to see what clients get. */
function faultyVmService(): ServiceBinding {
  return defineService(
    VmService,
    {
      listVms: { permission: "vm:list", mutating: false },
      getVm: { permission: "vm:list", mutating: false },
      setVmTenant: { permission: "vm:assign", mutating: true },
      setVmLabels: { permission: "vm:label", mutating: true },
      createVm: { permission: "vm:create", mutating: true },
      startVm: { permission: "vm:start", mutating: true },
      stopVm: { permission: "vm:stop", mutating: true },
      rebootVm: { permission: "vm:reboot", mutating: true },
      deleteVm: { permission: "vm:delete", mutating: true },
      adoptVm: { permission: "vm:adopt", mutating: true },
      getOperation: { permission: "vm:list", mutating: false },
      watchOperation: { permission: "vm:list", mutating: false },
    },
    {
      ...unimplementedLifecycle,
      async listVms() {
        const err = new Error(
          "ENOENT: no such file or directory, open '/var/lib/debvisor/secret/state.db'",
        );
        err.stack = `${err.message}\n    at open (/work/main/dist/src/store/sqlite.js:42:7)`;
        throw err;
      },
      async getVm() {
        throw new TypeError("Cannot read properties of undefined (reading 'id')");
      },
      async setVmTenant() {
        throw new TypeError("Cannot read properties of undefined (reading 'id')");
      },
      async setVmLabels() {
        throw new TypeError("Cannot read properties of undefined (reading 'id')");
      },
    },
  );
}

describe("the RPC server over TLS", () => {
  let pki: TestPki;
  let server: RpcServer;
  const config = parseConfig({});

  before(async () => {
    pki = await createTestPki();
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-transport-")), "state.db"),
      logger: silentLogger,
    });
    const inventory = createInventory({ store, clock: createManualClock(Date.now()) });
    for (let i = 1; i <= 3; i++) {
      await inventory.register(
        create(NodeInfoSchema, { id: { id: `n${i}` }, hostname: `h${i}` }),
        "sim",
      );
    }
    await inventory.cordon("n3", true);
    server = await startRpcServer({
      listen: "127.0.0.1:0",
      tls: { certPem: pki.server.certPem, keyPem: pki.server.keyPem, clientCaPem: pki.ca.certPem },
      tlsOptions: config.tls,
      limits: config.limits,
      services: [createNodeService({ inventory }), faultyVmService()],
      stages: [createMtlsAuthenticationStage(), validationStage],
      observer: { onStart() {}, onEnd() {} },
      logger: {
        debug() {},
        info() {},
        warn() {},
        error() {},
        child() {
          return this;
        },
      },
    });
  });
  after(async () => {
    await server.shutdown(1000);
  });

  const admin = () =>
    testChannel(server.address, {
      caPem: pki.ca.certPem,
      certPem: pki.client.certPem,
      keyPem: pki.client.keyPem,
    });

  it("serves ListNodes to a client with a certificate from the cluster CA", async () => {
    const ch = admin();
    const list = await createServiceClient(NodeService, ch).listNodes({});
    assert.deepEqual(
      list.nodes.map((n) => n.info?.id?.id),
      ["n1", "n2", "n3"],
    );
    ch.close();
  });

  it("answers an old client's Empty ListNodes request (zero bytes) with every node", async () => {
    const ch = admin();
    const { response, error, trailers } = await rawUnary(ch, LIST_NODES, Buffer.alloc(0));
    assert.equal(error, undefined);
    assert.equal(fromBinary(NodeListSchema, response as Buffer).nodes.length, 3);
    assert.match(String(trailers?.get("x-request-id")[0]), /^[0-9a-f-]{36}$/);
    ch.close();
  });

  it("sends a cluster-wide caller's ListNodes in its kept encoding, which decodes the same", async () => {
    const ch = admin();
    const { response, error } = await rawUnary(ch, LIST_NODES, Buffer.alloc(0));
    assert.equal(error, undefined);
    const list = fromBinary(NodeListSchema, response as Buffer);
    assert.deepEqual(
      list.nodes.map((n) => n.info?.id?.id),
      ["n1", "n2", "n3"],
    );
    // Encoded afresh, each summary's fields would be in field-number order;
    // ListNodes puts the time-dependent ones (readiness: 3) after those kept
    // from the record (n3's cordoned: 6).
    assert.notDeepEqual(response, Buffer.from(toBinary(NodeListSchema, list)));
    ch.close();
  });

  it("refuses a client without a certificate with UNAUTHENTICATED", async () => {
    const ch = testChannel(server.address, { caPem: pki.ca.certPem });
    const { error, trailers } = await rawUnary(ch, LIST_NODES, Buffer.alloc(0));
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(error?.details, "authentication required");
    assert.equal(trailers?.get("debvisor-error-reason")[0], "UNAUTHENTICATED");
    ch.close();
  });

  it("refuses a certificate from another CA even though its CN is admin", async () => {
    const ch = testChannel(server.address, {
      caPem: pki.ca.certPem,
      certPem: pki.foreignClient.certPem,
      keyPem: pki.foreignClient.keyPem,
    });
    const { error } = await rawUnary(ch, LIST_NODES, Buffer.alloc(0));
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(error?.details, "authentication required");
    ch.close();
  });

  it("ignores identity claims in metadata", async () => {
    const ch = testChannel(server.address, { caPem: pki.ca.certPem });
    const md = new grpc.Metadata();
    md.set("x-client-cert-cn", "admin");
    md.set("principal", "admin");
    const { error } = await rawUnary(ch, LIST_NODES, Buffer.alloc(0), md);
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
    ch.close();
  });

  it("answers RESOURCE_EXHAUSTED to a request over 1 MiB and keeps serving", async () => {
    const ch = admin();
    const big = toBinary(
      ListNodesRequestSchema,
      create(ListNodesRequestSchema, { zone: "z".repeat(MIB + 10) }),
    );
    const { error } = await rawUnary(ch, LIST_NODES, Buffer.from(big));
    assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
    const ok = await rawUnary(ch, LIST_NODES, Buffer.alloc(0));
    assert.equal(ok.error, undefined);
    ch.close();
  });

  it("answers INVALID_ARGUMENT to bytes that are not a request message", async () => {
    const ch = admin();
    const { error, trailers } = await rawUnary(ch, LIST_NODES, Buffer.from([0x12, 0x05, 0x01]));
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(trailers?.get("debvisor-error-reason")[0], "REQUEST_MALFORMED");
    ch.close();
  });

  it("names the bad field in a validation error", async () => {
    const ch = admin();
    const err = await createServiceClient(NodeService, ch)
      .registerNode({ id: { id: "Not A Valid Id!" } })
      .then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err?.details ?? "", /^id\.id: must be /);
    const bin = err?.metadata.get("grpc-status-details-bin")[0] as Buffer;
    const status = fromBinary(StatusSchema, bin);
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    const detail = status.details[0];
    assert.ok(detail !== undefined && anyIs(detail, BadRequestSchema));
    const bad = anyUnpack(detail, BadRequestSchema);
    assert.deepEqual(
      bad?.fieldViolations.map((v) => v.field),
      ["id.id"],
    );
    ch.close();
  });

  it("turns an unexpected handler error into INTERNAL with only a request id", async () => {
    const ch = admin();
    const requests: [string, Buffer][] = [
      ["ListVms", Buffer.alloc(0)],
      ["GetVm", Buffer.from(toBinary(VMRefSchema, create(VMRefSchema, { vmId: "vm-1" })))],
    ];
    for (const [method, body] of requests) {
      const { error, trailers } = await rawUnary(ch, `/debvisor.v1.VmService/${method}`, body);
      const id = String(trailers?.get("x-request-id")[0]);
      assert.equal(error?.code, grpc.status.INTERNAL);
      assert.equal(error?.details, `internal error (request id ${id})`);
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-/);
      const everything = JSON.stringify({ details: error?.details, md: trailers?.getMap() });
      for (const leak of [
        "ENOENT",
        "/var/lib",
        "state.db",
        "dist/src",
        " at ",
        "TypeError",
        "undefined",
      ]) {
        assert.ok(!everything.includes(leak), `client saw ${leak}: ${everything}`);
      }
    }
    ch.close();
  });

  it("refuses TLS 1.2 by default", async () => {
    const [host, port] = server.address.split(":");
    const outcome = await new Promise<string>((resolve) => {
      const socket = tlsConnect({
        host,
        port: Number(port),
        ca: pki.ca.certPem,
        servername: "localhost",
        maxVersion: "TLSv1.2",
        ALPNProtocols: ["h2"],
      });
      socket.once("secureConnect", () => {
        socket.destroy();
        resolve("connected");
      });
      socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.notEqual(outcome, "connected");
    assert.match(outcome, /VERSION|PROTOCOL|ALERT/);
  });
});

/** NodeList { nodes: [summary], next_page_token } with the token first: valid, and not what toBinary writes. */
function tokenFirst(summary: NodeSummary, nextPageToken: string): Uint8Array {
  return new BinaryWriter()
    .tag(2, WireType.LengthDelimited)
    .string(nextPageToken)
    .tag(1, WireType.LengthDelimited)
    .bytes(toBinary(NodeSummarySchema, summary))
    .finish();
}

describe("a handler's attached encoding of its answer", () => {
  let pki: TestPki;
  let server: RpcServer;
  const config = parseConfig({});
  const summary = create(NodeSummarySchema, { info: { id: { id: "n1" } }, vmCount: 2 });

  before(async () => {
    pki = await createTestPki();
    const service = defineService(
      NodeService,
      {
        registerNode: { permission: null, mutating: true, access: "public" },
        heartbeat: { permission: null, mutating: true, access: "public" },
        listNodes: { permission: null, mutating: false, access: "public" },
        getNode: { permission: null, mutating: false, access: "public" },
        cordonNode: { permission: null, mutating: true, access: "public" },
        uncordonNode: { permission: null, mutating: true, access: "public" },
        drainNode: { permission: null, mutating: true, access: "public" },
        removeNode: { permission: null, mutating: true, access: "public" },
      },
      {
        registerNode: notImplemented,
        heartbeat: notImplemented,
        async listNodes(req) {
          const list = { nodes: [summary], nextPageToken: req.zone.repeat(req.pageSize) };
          return attachEncoding(list, NodeListSchema, tokenFirst(summary, list.nextPageToken));
        },
        async getNode() {
          // Bytes of another message type: the adapter must not send them as a NodeDetail.
          const detail = { summary };
          return attachEncoding(detail, NodeListSchema, tokenFirst(summary, "x"));
        },
        cordonNode: notImplemented,
        uncordonNode: notImplemented,
        async *drainNode() {},
        removeNode: notImplemented,
      },
    );
    server = await startRpcServer({
      listen: "127.0.0.1:0",
      tls: { certPem: pki.server.certPem, keyPem: pki.server.keyPem, clientCaPem: pki.ca.certPem },
      tlsOptions: config.tls,
      limits: { ...config.limits, maxResponseBytes: 4096 },
      services: [service],
      stages: [],
      observer: { onStart() {}, onEnd() {} },
      logger: silentLogger,
    });
  });
  after(async () => {
    await server.shutdown(1000);
  });

  const call = async (path: string, request: Uint8Array) => {
    const ch = testChannel(server.address, { caPem: pki.ca.certPem });
    try {
      return await rawUnary(ch, path, Buffer.from(request));
    } finally {
      ch.close();
    }
  };
  const listNodes = (zone: string, pageSize: number) =>
    call(
      LIST_NODES,
      toBinary(ListNodesRequestSchema, create(ListNodesRequestSchema, { zone, pageSize })),
    );

  it("sends the attached bytes as they are", async () => {
    const { response, error } = await listNodes("t", 1);
    assert.equal(error, undefined);
    assert.deepEqual(new Uint8Array(response as Buffer), tokenFirst(summary, "t"));
  });

  it("still refuses attached bytes over the response size limit", async () => {
    const { error, trailers } = await listNodes("t", 5000);
    assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(trailers?.get("debvisor-error-reason")[0], "MESSAGE_TOO_LARGE");
  });

  it("encodes the answer itself when the bytes were attached for another message type", async () => {
    const request = create(GetNodeRequestSchema, { id: { id: "n1" } });
    const { response, error } = await call(
      "/debvisor.v1.NodeService/GetNode",
      toBinary(GetNodeRequestSchema, request),
    );
    assert.equal(error, undefined);
    const detail = create(NodeDetailSchema, { summary });
    assert.deepEqual(new Uint8Array(response as Buffer), toBinary(NodeDetailSchema, detail));
  });
});
