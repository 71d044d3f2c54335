import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { connect as h2connect, type IncomingHttpHeaders } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { resolveContext } from "../src/client/index.js";
import { ListNodesRequestSchema, NodeListSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";

const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";

/** One length-prefixed gRPC message with the given compressed flag. */
const frame = (flag: number, bytes: Uint8Array) => {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([prefix, bytes]);
};

describe("gRPC compression per the gRPC spec (raw HTTP/2 client, dev daemon)", () => {
  let d: DaemonProcess;
  let tls: { ca: string; cert?: string; key?: string };
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-compression-"));
    d = await startDevDaemon(dir);
    const ctx = resolveContext(join(dir, "hvctl.yaml"), "dev");
    tls = { ca: ctx.caPem, cert: ctx.certPem, key: ctx.keyPem };
  });
  after(() => d?.kill());

  /** Sends one ListNodes request; the response headers and trailers merged, and the body. */
  const listNodes = (encoding: string | undefined, body: Buffer) =>
    new Promise<{ meta: IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const session = h2connect(`https://${d.grpcAddress}`, { ...tls, servername: "localhost" });
      session.once("error", reject);
      const req = session.request({
        ":method": "POST",
        ":path": LIST_NODES,
        "content-type": "application/grpc",
        te: "trailers",
        ...(encoding === undefined ? {} : { "grpc-encoding": encoding }),
      });
      const meta: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => Object.assign(meta, h));
      req.on("trailers", (t) => Object.assign(meta, t));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.once("error", reject);
      req.once("close", () => {
        session.close();
        resolve({ meta, body: Buffer.concat(chunks) });
      });
      req.end(body);
    });

  const request = (zone: string) =>
    toBinary(ListNodesRequestSchema, create(ListNodesRequestSchema, { zone }));

  it("decompresses a gzip message sent with grpc-encoding gzip (grpc-js's own support kept)", async () => {
    const all = await listNodes("gzip", frame(1, gzipSync(request(""))));
    assert.equal(all.meta["grpc-status"], "0", String(all.meta["grpc-message"]));
    const nodes = fromBinary(NodeListSchema, all.body.subarray(5)).nodes;
    assert.ok(nodes.length > 0, "the dev daemon lists its simulated nodes");
    // The zone filter inside the compressed bytes is honoured: they were decompressed.
    const none = await listNodes("gzip", frame(1, gzipSync(request("no-such-zone"))));
    assert.equal(none.meta["grpc-status"], "0", String(none.meta["grpc-message"]));
    assert.equal(fromBinary(NodeListSchema, none.body.subarray(5)).nodes.length, 0);
  });

  it("answers an unsupported grpc-encoding UNIMPLEMENTED with grpc-accept-encoding", async () => {
    const r = await listNodes("snappy", frame(1, request("")));
    assert.equal(r.meta["grpc-status"], "12");
    const acceptable = String(r.meta["grpc-accept-encoding"] ?? "").split(/\s*,\s*/);
    assert.ok(acceptable.includes("gzip") && acceptable.includes("identity"), String(acceptable));
    assert.ok(!acceptable.includes("snappy"));
  });

  it("answers a compressed message without grpc-encoding (or with identity) INTERNAL", async () => {
    for (const encoding of [undefined, "identity"]) {
      const r = await listNodes(encoding, frame(1, gzipSync(request(""))));
      assert.equal(r.meta["grpc-status"], "13", `${encoding}: ${String(r.meta["grpc-message"])}`);
    }
    // The same message with the flag clear is fine.
    const plain = await listNodes(undefined, frame(0, request("")));
    assert.equal(plain.meta["grpc-status"], "0", String(plain.meta["grpc-message"]));
  });
});
