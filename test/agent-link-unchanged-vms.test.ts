// The agent's link lists its VMs in every heartbeat to a server whose
// Welcome does not say it takes vms_unchanged (an older daemon), and leaves
// out a repeated list otherwise. Found by an adversarial review: no test
// failed when the link ignored the Welcome's accepts_unchanged_vms.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { runAgentLink } from "../src/agent/index.js";
import { type AgentMessage, ControlMessageSchema } from "../src/gen/debvisor/v1/agent_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import type { RpcServer } from "../src/server/index.js";
import { linkOptions, startAgentServiceServer } from "./helpers/agent-service-server.js";
import { eventually } from "./helpers/eventually.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

describe("the agent link and servers old and new", () => {
  let pki: TestPki;
  let server: RpcServer;
  let accepts = false;
  /** What the streams of the test at hand sent (a stream of an earlier test may still be read). */
  let got: AgentMessage[] = [];
  let dir: string;

  before(async () => {
    pki = await createTestPki();
    dir = mkdtempSync(join(tmpdir(), "dv-link-unchanged-"));
    server = await startAgentServiceServer(pki, async function* (requests) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done === true) return;
      const sink = got;
      sink.push(first.value);
      yield create(ControlMessageSchema, {
        kind: {
          case: "welcome",
          value: { heartbeatIntervalMs: 30, serverId: "old-or-new", acceptsUnchangedVms: accepts },
        },
      });
      for (;;) {
        const next = await it.next();
        if (next.done === true) return;
        sink.push(next.value);
      }
    });
  });
  after(async () => {
    await server.shutdown(1000);
  });

  const health = () => ({
    nodeId: { id: "admin" },
    timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
    vms: [
      { id: "a", state: VmState.RUNNING, vcpus: 1, memoryBytes: 1n << 30n },
      { id: "b", state: VmState.STOPPED, vcpus: 1, memoryBytes: 1n << 30n },
    ],
  });

  async function heartbeatsFrom(acceptsUnchanged: boolean) {
    accepts = acceptsUnchanged;
    got = [];
    const stop = new AbortController();
    const link = runAgentLink({
      ...linkOptions(pki, dir, server.address),
      heartbeatIntervalMs: 30,
      signal: stop.signal,
      hello: async () => ({
        kind: { case: "hello", value: { info: { id: { id: "admin" } }, health: health() } },
      }),
      heartbeat: async (sequence) => ({
        kind: { case: "heartbeat", value: { sequence, health: health() } },
      }),
      onWelcome: () => {},
      onMessage: () => {},
      onDown: () => {},
    });
    await eventually(() => got.filter((m) => m.kind.case === "heartbeat").length >= 4);
    stop.abort();
    await link.done;
    return got.flatMap((m) =>
      m.kind.case === "heartbeat"
        ? [
            m.kind.value.vmsUnchanged
              ? "unchanged"
              : m.kind.value.health?.vms.map((v) => v.id).join(","),
          ]
        : [],
    );
  }

  it("an older server (no accepts_unchanged_vms): every heartbeat lists the VMs", async () => {
    const beats = await heartbeatsFrom(false);
    assert.ok(
      beats.every((b) => b === "a,b"),
      beats.join(" "),
    );
  });

  it("a server that takes them: heartbeats repeating the Hello's VMs leave them out", async () => {
    const beats = await heartbeatsFrom(true);
    assert.ok(
      beats.every((b) => b === "unchanged"),
      beats.join(" "),
    );
  });
});
