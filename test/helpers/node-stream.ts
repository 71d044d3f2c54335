import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { openChannel } from "../../src/client/index.js";
import {
  type AgentMessageSchema as AgentMessageDesc,
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
} from "../../src/gen/debvisor/v1/agent_pb.js";
import { enrollAgent } from "./agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./daemon-process.js";
import { hvctlInProcess } from "./hvctl-in-process.js";

const CONNECT = "/debvisor.v1.AgentService/Connect";

/** A channel to `server` with the identity `debvisor-agent enroll` wrote to `nodeDir`. */
export function nodeChannel(server: string, nodeDir: string): grpc.Client {
  return openChannel({
    name: "node",
    server,
    caPem: readFileSync(join(nodeDir, "ca.crt"), "utf8"),
    certPem: readFileSync(join(nodeDir, "node.crt"), "utf8"),
    keyPem: readFileSync(join(nodeDir, "node.key"), "utf8"),
    tlsServerName: undefined,
  });
}

/** A raw `AgentService.Connect` stream, as a hostile or buggy agent would hold it. */
export interface RawAgentStream {
  readonly call: grpc.ClientDuplexStream<Uint8Array, ControlMessage>;
  /** Everything the server sent so far. */
  readonly got: ControlMessage[];
  /** How the stream failed, if it did. */
  failed(): grpc.ServiceError | undefined;
  send(m: MessageInitShape<typeof AgentMessageDesc>): void;
}

/** Opens a Connect stream on `ch` and records what comes back; nothing is sent yet. */
export function rawAgentStream(ch: grpc.Client): RawAgentStream {
  const call = ch.makeBidiStreamRequest(
    CONNECT,
    (m: Uint8Array) => Buffer.from(m),
    (b: Buffer) => fromBinary(ControlMessageSchema, b),
    new grpc.Metadata(),
    {},
  ) as grpc.ClientDuplexStream<Uint8Array, ControlMessage>;
  const got: ControlMessage[] = [];
  let failed: grpc.ServiceError | undefined;
  call.on("data", (m: ControlMessage) => got.push(m));
  call.on("error", (err: grpc.ServiceError) => {
    failed = err;
  });
  return {
    call,
    got,
    failed: () => failed,
    send: (m) => call.write(toBinary(AgentMessageSchema, create(AgentMessageSchema, m))),
  };
}

/** A node's health report with no VMs, stamped now. */
export function bareHealth(nodeId: string) {
  return { nodeId: { id: nodeId }, timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) } };
}

/** The Hello of a node with no VMs. */
export function bareHello(
  nodeId: string,
  capabilities: string[] = [],
): MessageInitShape<typeof AgentMessageDesc> {
  return {
    kind: {
      case: "hello",
      value: {
        info: { id: { id: nodeId }, hostname: `${nodeId}.example` },
        agentVersion: "test",
        capabilities,
        health: bareHealth(nodeId),
      },
    },
  };
}

/**
 * A dev daemon with `config` (no simulation) in a new directory, and node
 * `node` enrolled in `dir/node` as `debvisor-agent enroll` does it: for a
 * test that speaks for the node itself over {@link rawAgentStream}.
 */
export async function daemonWithNode(
  prefix: string,
  config: object,
  node: string,
): Promise<{ dir: string; daemon: DaemonProcess; nodeDir: string }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const daemon = await startDevDaemon(dir, { simulation: { enabled: false }, ...config });
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  await enrollAgent(hvctl, daemon.grpcAddress, dir, node);
  return { dir, daemon, nodeDir: join(dir, node) };
}
