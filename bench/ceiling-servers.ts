// The ceilings the daemon is measured against, each run as its own process
// (like the daemon) so its CPU time can be read from /proc:
//
//   http2    a bare node:http2 TLS server answering ListNodes with a fixed,
//            pre-encoded gRPC response (no gRPC library, no codec);
//   grpc-js  a bare grpc-js server with the protobuf-es codec and no
//            pipeline, answering the same 10-node response (decoded once,
//            encoded on every call as a real handler's answer would be).
//
// Both use the daemon's TLS settings (TLS 1.3, client certificate requested)
// and count calls on a loopback /metrics in the daemon's format, so one
// verification serves all servers. Started by bench-servers.ts:
//
//   node dist/bench/ceiling-servers.js --kind http2|grpc-js --cert F --key F --ca F --response F
//
// prints {"address","metricsAddress"} as one JSON line once listening.
import { createSecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ListNodesRequestSchema, NodeListSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { grpcFrame } from "./bench-support.js";
import {
  type CeilingListening,
  listenGrpc,
  readCeilingArgs,
  runCeilingProcess,
} from "./ceiling-process.js";

const SERVICE = "debvisor.v1.NodeService";
const PATH = `/${SERVICE}/ListNodes`;
/** The daemon's default; enough for h2load's -m 10. */
const MAX_STREAMS = 100;

const { kind, tls, files } = readCeilingArgs(["response"]);
const responseBytes = files.response;
const counted = { ok: 0, other: 0 };

async function startHttp2(): Promise<CeilingListening> {
  const frame = grpcFrame(responseBytes);
  const server = createSecureServer({
    ...tls,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
    allowHTTP1: false,
    settings: { maxConcurrentStreams: MAX_STREAMS },
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    if (headers[":path"] !== PATH || headers["content-type"] !== "application/grpc") {
      counted.other++;
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "12" },
        { endStream: true },
      );
      return;
    }
    stream.resume(); // the request is read to its end, then answered
    stream.once("end", () => {
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
      counted.ok++;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function startGrpcJs(): Promise<CeilingListening> {
  const response = fromBinary(NodeListSchema, responseBytes);
  const server = new grpc.Server({
    "grpc.max_concurrent_streams": MAX_STREAMS,
    "grpc.enable_channelz": 0,
  });
  server.addService(
    {
      ListNodes: {
        path: PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: (m) => Buffer.from(toBinary(ListNodesRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(ListNodesRequestSchema, b),
        responseSerialize: (m) => Buffer.from(toBinary(NodeListSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(NodeListSchema, b),
      },
    },
    {
      ListNodes: (_call: unknown, callback: grpc.sendUnaryData<typeof response>) => {
        counted.ok++;
        callback(null, response);
      },
    },
  );
  return listenGrpc(server, tls, false);
}

const line = (code: string, n: number) =>
  `debvisor_rpc_calls_total{service="${SERVICE}",method="ListNodes",code="${code}"} ${n}\n`;
await runCeilingProcess(
  { http2: startHttp2, "grpc-js": startGrpcJs },
  kind,
  () => line("OK", counted.ok) + line("UNIMPLEMENTED", counted.other),
);
