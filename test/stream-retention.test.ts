// What a long-lived stream keeps in memory between two messages. An agent's
// heartbeat carries the node's whole report (a Health of every VM); a stream
// lives for hours and a daemon holds thousands, so a message handled must
// not stay reachable until the next one arrives.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { silentLogger } from "../src/core/index.js";
import {
  type AgentMessage,
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import type { RpcServer } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { startAgentServiceServer } from "./helpers/agent-service-server.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";
import { testChannel } from "./helpers/grpc-client.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** How many of `refs` still reach their object once the current job is over and collected. */
async function stillHeld(...refs: WeakRef<object>[]): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return refs.filter((ref) => ref.deref() !== undefined).length;
}

/** True once nothing but `ref` reaches its object: collected after the current job. */
const collected = async (ref: WeakRef<object>) => (await stillHeld(ref)) === 0;

/** The message's content, weakly (a local would keep the last one reachable). */
function innerOf(ref: WeakRef<AgentMessage>): WeakRef<object> {
  const m = ref.deref();
  assert.ok(m !== undefined);
  return new WeakRef(m.kind.value as object);
}

/** A heartbeat with a report of `vms` VMs, as an agent sends it. */
function heartbeat(node: string, vms: number, sequence: number) {
  return {
    kind: {
      case: "heartbeat" as const,
      value: {
        sequence: BigInt(sequence),
        health: {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) + BigInt(sequence) },
          vms: Array.from({ length: vms }, (_, v) => ({
            id: `${node}-vm-${v}`,
            name: `vm ${v}`,
            state: VmState.RUNNING,
            vcpus: 2,
            memoryBytes: 2n ** 31n,
            nodeId: { id: node },
          })),
        },
      },
    },
  };
}

describe("a long-lived stream between two messages", () => {
  let pki: TestPki;
  let server: RpcServer;
  /** The messages the server's handler was given, weakly. */
  const given: WeakRef<AgentMessage>[] = [];
  /** Messages the transport counted as received (its observer). */
  let received = 0;
  type Serve = (requests: AsyncIterable<AgentMessage>) => AsyncIterable<ControlMessage>;
  let keepNothing: Serve;
  /** The Connect handler of the test at hand. */
  let serve: Serve;

  before(async () => {
    pki = await createTestPki();
    // Reads each message in a call of its own (as the agent hub does), so that
    // only the transport could still hold a message once it is handled.
    const take = async (it: AsyncIterator<AgentMessage>) => {
      const next = await it.next();
      if (next.done === true) return false;
      given.push(new WeakRef(next.value));
      return true;
    };
    keepNothing = async function* (requests) {
      const it = requests[Symbol.asyncIterator]();
      while (await take(it))
        yield create(ControlMessageSchema, {
          kind: { case: "welcome", value: { serverId: String(given.length) } },
        });
    };
    serve = keepNothing;
    server = await startAgentServiceServer(
      pki,
      (requests) => serve(requests),
      () => {
        received++;
      },
    );
  });
  after(async () => {
    await server.shutdown(1000);
  });

  /** A Connect stream of raw frames from the test client's certificate. */
  const openConnect = () => {
    const channel = testChannel(server.address, {
      caPem: pki.ca.certPem,
      certPem: pki.client.certPem,
      keyPem: pki.client.keyPem,
    });
    const call = channel.makeBidiStreamRequest(
      "/debvisor.v1.AgentService/Connect",
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    return { channel, call };
  };

  it("the gRPC transport keeps no decoded message once the handler has it", async () => {
    const { channel, call } = openConnect();
    const answers: string[] = [];
    let answered: (() => void) | undefined;
    call.on("data", (b: Buffer) => {
      const m = fromBinary(ControlMessageSchema, b);
      if (m.kind.case === "welcome") answers.push(m.kind.value.serverId);
      answered?.();
    });
    call.on("error", () => {});
    const exchange = async (sequence: number) => {
      const got = new Promise<void>((r) => (answered = r));
      call.write(
        Buffer.from(
          toBinary(AgentMessageSchema, create(AgentMessageSchema, heartbeat("n1", 20, sequence))),
        ),
      );
      await got;
    };
    try {
      for (let sequence = 1; sequence <= 3; sequence++) {
        await exchange(sequence);
        assert.equal(answers.length, sequence, "each message answered");
        const last = given[sequence - 1];
        assert.ok(last !== undefined);
        assert.ok(
          await collected(last),
          `message ${sequence} is still reachable while the stream waits for the next`,
        );
      }
    } finally {
      call.end();
      channel.close();
    }
  });

  it("after a message that does not decode, the stream's requests end there", async () => {
    // The handler goes on reading after the error, to see what a later read gives.
    const seen: string[] = [];
    serve = async function* (requests) {
      const it = requests[Symbol.asyncIterator]();
      for (let i = 0; i < 3; i++) {
        try {
          const next = await it.next();
          seen.push(next.done === true ? "done" : String(next.value.kind.case));
        } catch (err) {
          seen.push(`error ${(err as { reason?: string }).reason}`);
        }
        yield create(ControlMessageSchema, {
          kind: { case: "welcome", value: { serverId: String(i) } },
        });
      }
    };
    received = 0;
    const { channel, call } = openConnect();
    call.on("data", () => {});
    call.on("error", () => {});
    const ended = new Promise((r) => call.on("status", r));
    const message = (sequence: number) =>
      Buffer.from(
        toBinary(AgentMessageSchema, create(AgentMessageSchema, heartbeat("n1", 1, sequence))),
      );
    try {
      call.write(message(1));
      // Field 1 with wire type 7, which does not exist: not a message.
      call.write(Buffer.from([0x0f, 0x01]));
      call.write(message(3));
      call.end();
      await ended;
      assert.deepEqual(seen, ["heartbeat", "error REQUEST_MALFORMED", "done"]);
      assert.equal(received, 1, "only the message before the bad one counts as received");
    } finally {
      serve = keepNothing;
      channel.close();
    }
  });

  it("the agent hub keeps no heartbeat message once it is handled", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-retention-")), "state.db"),
      logger: silentLogger,
    });
    const { hub, inventory, close } = hubOn(store);
    const agent = connectInProcess(hub, "n1", []);
    try {
      await eventually(() => assert.ok(agent.received.some((m) => m.kind.case === "welcome")));
      for (let sequence = 1; sequence <= 3; sequence++) {
        const ref = agent.send(heartbeat("n1", 20, sequence));
        // Handled: the hub confirms each heartbeat it has taken (LeaseRenewed).
        await eventually(() =>
          assert.ok(
            agent.received.some(
              (m) => m.kind.case === "leaseRenewed" && m.kind.value.sequence === BigInt(sequence),
            ),
          ),
        );
        assert.equal((await inventory.readNode("n1"))?.summary.health?.vms.length, 20);
        assert.ok(
          await collected(ref),
          `heartbeat ${sequence} is still reachable while the stream waits for the next`,
        );
      }
    } finally {
      await agent.close();
      close();
      await store.close();
    }
  });

  it("the agent hub keeps no storage report of an operation it never sent to the stream", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-retention-")), "state.db"),
      logger: silentLogger,
    });
    const { hub, close } = hubOn(store);
    const agent = connectInProcess(hub, "n1", []);
    try {
      await eventually(() => assert.ok(agent.received.some((m) => m.kind.case === "welcome")));
      // A stolen node certificate (or a buggy agent) sends reports no result ever follows:
      // each decoded report is held until its operation's result, for the stream's life.
      const reports: WeakRef<object>[] = [];
      for (let i = 0; i < 64; i++) {
        const sent = agent.send({
          kind: {
            case: "storageReport",
            value: {
              operationId: `never-sent-${i}`,
              found: true,
              snapshots: Array.from({ length: 100 }, (_, s) => ({ labels: { n: String(s) } })),
            },
          },
        });
        reports.push(innerOf(sent));
      }
      agent.send(heartbeat("n1", 0, 1));
      await eventually(() => assert.ok(agent.received.some((m) => m.kind.case === "leaseRenewed")));
      assert.equal(
        await stillHeld(...reports),
        0,
        "reports of operations this stream never had are not kept",
      );
    } finally {
      await agent.close();
      close();
      await store.close();
    }
  });
});
