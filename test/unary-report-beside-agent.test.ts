// Found by an adversarial review (8 December 2026): a stolen node certificate
// used on the old unary NodeService.Heartbeat overrode what the node's
// connected agent reports, silently. docs/security.md ("A stolen node certificate and
// replication tickets") counts on a thief showing: its stream replaces the
// real agent's (AGENT_STREAM_REPLACED), the agent reconnects and the two take
// turns. A unary Heartbeat goes round the stream guard: the agent's stream
// stays up, its heartbeats are confirmed, and a report the thief stamps a few
// seconds ahead (within cluster.reportClockSkewMs) makes every one of the
// agent's reports "older than the last" and ignored. Here the thief's report
// hid the VM the agent runs, for as long as it kept sending. Now NodeService
// reports for a node whose agent is connected are refused (AGENT_REPORTS_NODE).
import "reflect-metadata";
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as grpc from "@grpc/grpc-js";
import { createServiceClient, hideIpSniWarning, resolveContext } from "../src/client/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import type { DaemonProcess } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { bareHello, daemonWithNode, nodeChannel, rawAgentStream } from "./helpers/node-stream.js";

hideIpSniWarning();

const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });
const vm = {
  id: "vm-real",
  name: "vm-real",
  state: VmState.RUNNING,
  vcpus: 1,
  memoryBytes: 1n << 30n,
  nodeId: { id: "node-x" },
};

describe("NodeService reports beside a connected agent", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const channels: grpc.Client[] = [];

  before(async () => {
    ({ dir, daemon } = await daemonWithNode(
      "dv-attack-unary-",
      { cluster: { failover: { enabled: false } } },
      "node-x",
    ));
  });
  after(() => {
    for (const c of channels) c.close();
    daemon?.kill();
  });

  it("does not silently replace the reports of the node's connected agent", async () => {
    const admin = devClients(resolveContext(join(dir, "hvctl.yaml"), "dev"), channels);
    const shown = async () =>
      ((await admin.nodes.getNode({ id: { id: "node-x" } })).vms ?? []).map((v) => v.id);
    // The real agent: connected, reporting its VM every 300 ms.
    const agentCh = nodeChannel(daemon.grpcAddress, join(dir, "node-x"));
    channels.push(agentCh);
    const agent = rawAgentStream(agentCh);
    agent.send(bareHello("node-x"));
    await eventually(() => assert.ok(agent.got.some((m) => m.kind.case === "welcome")), {
      timeoutMs: 15_000,
    });
    let seq = 0n;
    let beating = true;
    const beats = (async () => {
      while (beating) {
        seq++;
        agent.send({
          kind: {
            case: "heartbeat",
            value: {
              sequence: seq,
              health: { nodeId: { id: "node-x" }, timestamp: ts(Date.now()), vms: [vm] },
            },
          },
        });
        await sleep(300);
      }
    })();
    await eventually(async () => assert.deepEqual(await shown(), ["vm-real"]), {
      timeoutMs: 15_000,
    });

    // The thief: the same certificate, on NodeService.Heartbeat, stamped 4 s ahead.
    const thiefCh = nodeChannel(daemon.grpcAddress, join(dir, "node-x"));
    channels.push(thiefCh);
    const thief = createServiceClient(NodeService, thiefCh);
    let thiefOutcome = "accepted";
    for (let i = 0; i < 6; i++) {
      const got = await callOutcome(
        thief.heartbeat({ nodeId: { id: "node-x" }, timestamp: ts(Date.now() + 4000), vms: [] }),
      );
      if (got.code !== 0) thiefOutcome = got.reason;
      await sleep(300);
    }
    const register = await callOutcome(
      thief.registerNode({ id: { id: "node-x" }, hostname: "thief.example" }),
    );
    // Node ids are one without regard to case; the presence record is keyed as the agent spells it.
    const shouted = await callOutcome(
      thief.heartbeat({ nodeId: { id: "NODE-X" }, timestamp: ts(Date.now() + 4000), vms: [] }),
    );
    const during = await shown();
    const agentStreamFailed = agent.failed();
    beating = false;
    await beats;
    agent.call.end();
    assert.equal(agentStreamFailed, undefined, "the agent's stream stays up");
    assert.equal(thiefOutcome, "AGENT_REPORTS_NODE");
    assert.equal(register.reason, "AGENT_REPORTS_NODE");
    assert.equal(shouted.reason, "AGENT_REPORTS_NODE", "the same node, spelt in capitals");
    assert.deepEqual(
      during,
      ["vm-real"],
      `while its agent's stream was up and reporting vm-real every 300 ms, the thief's unary heartbeats (${thiefOutcome}) made node-x show ${JSON.stringify(during)}; nothing told the agent`,
    );
  });
});
