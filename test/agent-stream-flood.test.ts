// A node's stream (a stolen certificate, a buggy agent) sending as fast as it
// can: every message is a store write or read (a heartbeat rewrites the
// node's record, and every node watch hears of it), and a unary Heartbeat
// is held to the per-principal rate limit. The stream is paced instead of
// refused: past its burst, the hub reads one message per token.
import "reflect-metadata";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { hideIpSniWarning, openChannel } from "../src/client/index.js";
import {
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { enrollAgent } from "./helpers/agent-process.js";
import {
  type DaemonProcess,
  HVCTL_BIN,
  runProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

hideIpSniWarning();
const CONNECT = "/debvisor.v1.AgentService/Connect";
const RATE = 50;
const BURST = 100;

describe("a node's stream sending as fast as it can", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const hvctl = (...args: string[]) =>
    runProcess(process.execPath, [HVCTL_BIN, "--config", join(dir, "hvctl.yaml"), ...args]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agent-flood-"));
    daemon = await startDevDaemon(dir, {
      simulation: { enabled: false },
      agents: { messageRate: { ratePerSecond: RATE, burst: BURST } },
    });
    await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-f");
  });
  after(() => daemon?.kill());

  it("is read at the node's message rate past its burst, and keeps its stream", async () => {
    const nodeDir = join(dir, "node-f");
    const ch = openChannel({
      name: "node",
      server: daemon.grpcAddress,
      caPem: readFileSync(join(nodeDir, "ca.crt"), "utf8"),
      certPem: readFileSync(join(nodeDir, "node.crt"), "utf8"),
      keyPem: readFileSync(join(nodeDir, "node.key"), "utf8"),
      tlsServerName: undefined,
    });
    const call = ch.makeBidiStreamRequest(
      CONNECT,
      (m: Uint8Array) => Buffer.from(m),
      (b: Buffer) => fromBinary(ControlMessageSchema, b),
      new grpc.Metadata(),
      {},
    ) as grpc.ClientDuplexStream<Uint8Array, ControlMessage>;
    let renewed = 0;
    let welcomed = false;
    let failed: grpc.ServiceError | undefined;
    call.on("data", (m: ControlMessage) => {
      if (m.kind.case === "welcome") welcomed = true;
      if (m.kind.case === "leaseRenewed") renewed++;
    });
    call.on("error", (err: grpc.ServiceError) => {
      failed = err;
    });
    const health = {
      nodeId: { id: "node-f" },
      timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
    };
    call.write(
      toBinary(
        AgentMessageSchema,
        create(AgentMessageSchema, {
          kind: {
            case: "hello",
            value: {
              info: { id: { id: "node-f" }, hostname: "node-f.example" },
              agentVersion: "test",
              health,
            },
          },
        }),
      ),
    );
    await eventually(() => assert.ok(welcomed), { timeoutMs: 15_000 });
    const flood = 1000;
    const started = Date.now();
    for (let sequence = 1; sequence <= flood; sequence++)
      call.write(
        toBinary(
          AgentMessageSchema,
          create(AgentMessageSchema, {
            kind: { case: "heartbeat", value: { sequence: BigInt(sequence), health } },
          }),
        ),
      );
    await sleep(2000);
    const seconds = (Date.now() - started) / 1000;
    // Each confirmed heartbeat was read and written; a quarter of the rate's slack.
    const allowed = BURST + RATE * seconds + RATE / 4;
    assert.ok(
      renewed <= allowed,
      `${renewed} of ${flood} heartbeats handled in ${seconds.toFixed(1)} s: at most ${Math.floor(allowed)} allowed`,
    );
    // Paced, not refused: the stream goes on and the heartbeats keep being confirmed.
    const before = renewed;
    await eventually(() => assert.ok(renewed >= before + RATE / 2, `${renewed} confirmed`), {
      timeoutMs: 10_000,
    });
    assert.equal(failed, undefined, "the stream stays");
    call.cancel();
    ch.close();
  });
});
