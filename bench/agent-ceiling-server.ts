// The ceiling of the agents scenario: what an agent stream costs a Node
// server before any of the daemon's own code, run as its own process (like
// the daemon) so its memory and CPU time can be read from /proc.
//
//   grpc-js  a bare grpc-js server (the daemon's transport, with the daemon's
//            TLS settings and default limits) serving AgentService.Connect
//            with the protobuf-es codec: every message is decoded, the Hello
//            is answered with a Welcome, and nothing is kept;
//   http2    a bare node:http2 TLS server doing the same without grpc-js:
//            frames are split and decoded, a pre-encoded Welcome is sent.
//
// Both require a client certificate signed by --ca, as the daemon does for
// agents, and serve the daemon's heap gauge and a heartbeat count on a
// loopback /metrics. Started by scenario-agents.ts:
//
//   node dist/bench/agent-ceiling-server.js --kind grpc-js|http2 --cert F --key F --ca F
//
// prints {"address","metricsAddress"} as one JSON line once listening.
import { createSecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type AgentMessage,
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { grpcFrame } from "./bench-support.js";
import {
  type CeilingListening,
  listenGrpc,
  readCeilingArgs,
  runCeilingProcess,
} from "./ceiling-process.js";

const PATH = "/debvisor.v1.AgentService/Connect";
/** The daemon's defaults (limits.*) that shape an idle connection. */
const DAEMON_LIMITS = {
  maxConcurrentStreams: 100,
  maxSessionMemoryMib: 32,
  keepaliveTimeMs: 300_000,
  keepaliveTimeoutMs: 20_000,
};

const { kind, tls } = readCeilingArgs([]);
const welcome = (): ControlMessage =>
  create(ControlMessageSchema, {
    // Takes heartbeats with vms_unchanged, as the daemon does: the same messages reach both.
    kind: {
      case: "welcome",
      value: { heartbeatIntervalMs: 10_000, serverId: "ceiling", acceptsUnchangedVms: true },
    },
  });
const counted = { streams: 0, heartbeats: 0 };
/** Counts a decoded message; true for the stream's Hello. */
const take = (m: AgentMessage) => {
  if (m.kind.case === "heartbeat") counted.heartbeats++;
  return m.kind.case === "hello";
};

async function startGrpcJs(): Promise<CeilingListening> {
  const server = new grpc.Server({
    "grpc.max_concurrent_streams": DAEMON_LIMITS.maxConcurrentStreams,
    "grpc-node.max_session_memory": DAEMON_LIMITS.maxSessionMemoryMib,
    "grpc.keepalive_time_ms": DAEMON_LIMITS.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": DAEMON_LIMITS.keepaliveTimeoutMs,
    "grpc.enable_channelz": 0,
  });
  server.addService(
    {
      Connect: {
        path: PATH,
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: AgentMessage) => Buffer.from(toBinary(AgentMessageSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(AgentMessageSchema, b),
        responseSerialize: (m: ControlMessage) => Buffer.from(toBinary(ControlMessageSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(ControlMessageSchema, b),
      },
    },
    {
      Connect: (call: grpc.ServerDuplexStream<AgentMessage, ControlMessage>) => {
        counted.streams++;
        call.on("data", (m: AgentMessage) => {
          if (take(m)) call.write(welcome());
        });
        call.on("error", () => {});
        call.on("end", () => call.end());
      },
    },
  );
  return listenGrpc(server, tls, true);
}

async function startHttp2(): Promise<CeilingListening> {
  const frame = grpcFrame(toBinary(ControlMessageSchema, welcome()));
  const server = createSecureServer({
    ...tls,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
    allowHTTP1: false,
    maxSessionMemory: DAEMON_LIMITS.maxSessionMemoryMib,
    settings: { maxConcurrentStreams: DAEMON_LIMITS.maxConcurrentStreams },
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    if (headers[":path"] !== PATH) {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" });
      stream.end();
      return;
    }
    counted.streams++;
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    let buffered: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 5) {
        const length = buffered.readUInt32BE(1);
        if (buffered.length < 5 + length) return;
        if (take(fromBinary(AgentMessageSchema, buffered.subarray(5, 5 + length))))
          stream.write(frame);
        buffered = buffered.subarray(5 + length);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

await runCeilingProcess(
  { "grpc-js": startGrpcJs, http2: startHttp2 },
  kind,
  () =>
    `debvisor_rpcd_nodejs_heap_size_used_bytes ${process.memoryUsage().heapUsed}\n` +
    `bench_agent_streams_total ${counted.streams}\n` +
    `bench_agent_heartbeats_total ${counted.heartbeats}\n`,
);
