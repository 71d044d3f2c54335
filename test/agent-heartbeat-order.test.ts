// A VM operation's result follows a fresh report (AgentLink.beat). A
// periodic heartbeat already in flight when the operation ended (its domain
// list taken before, slow to come back, as a virsh listing of many domains
// is) carries a later timestamp (the agent stamps a report once its list is
// back), so the inventory would store it after the result, and the caller's
// next `vm get` would show the deleted VM again, as unmanaged. The link
// drops a heartbeat begun before one it has sent (found by a review).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { runAgentLink } from "../src/agent/index.js";
import { createInventory } from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import { type AgentMessage, ControlMessageSchema } from "../src/gen/debvisor/v1/agent_pb.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import type { RpcServer } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { linkOptions, startAgentServiceServer } from "./helpers/agent-service-server.js";
import { eventually } from "./helpers/eventually.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";

describe("a heartbeat in flight when a VM operation ends", () => {
  let pki: TestPki;
  let server: RpcServer;
  const got: AgentMessage[] = [];
  let dir: string;

  before(async () => {
    pki = await createTestPki();
    dir = mkdtempSync(join(tmpdir(), "dv-beat-order-"));
    server = await startAgentServiceServer(pki, async function* (requests) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done === true) return;
      got.push(first.value);
      yield create(ControlMessageSchema, {
        kind: { case: "welcome", value: { heartbeatIntervalMs: 400, serverId: "s" } },
      });
      for (;;) {
        const next = await it.next();
        if (next.done === true) return;
        got.push(next.value);
      }
    });
  });
  after(async () => {
    await server.shutdown(1000);
  });

  it("no report older than the one sent before the result is stored after it", async () => {
    let present = true;
    let started = 0;
    /** As node-hypervisor's inventory: the domains listed, then the report stamped. */
    const report = async (slowMs: number) => {
      const vms = present
        ? [{ id: "vm-1", state: VmState.RUNNING, vcpus: 1, memoryBytes: 1n << 30n }]
        : [];
      await sleep(slowMs);
      const ms = Date.now();
      return {
        nodeId: { id: "admin" },
        timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
        vms,
      };
    };
    const stop = new AbortController();
    const link = runAgentLink({
      ...linkOptions(pki, dir, server.address),
      heartbeatIntervalMs: 400,
      signal: stop.signal,
      hello: async () => ({
        kind: { case: "hello", value: { info: { id: { id: "admin" } }, health: await report(0) } },
      }),
      heartbeat: async (sequence) => {
        started++;
        // The first periodic heartbeat's listing is slow (many domains, a busy libvirtd).
        const health = await report(sequence === 1n ? 300 : 0);
        return { kind: { case: "heartbeat", value: { sequence, health } } };
      },
      onWelcome: () => {},
      onMessage: () => {},
      onDown: () => {},
    });
    try {
      // The periodic heartbeat 1 has listed the domains (vm-1 still there)...
      await eventually(() => started >= 1);
      await sleep(20);
      // ...and the delete ends: the executor awaits beforeResult (link.beat), then sends the result.
      present = false;
      await link.beat();
      link.send({
        kind: { case: "result", value: { operationId: "op-delete", outcome: 1 } },
      });
      await eventually(() => got.filter((m) => m.kind.case === "heartbeat").length >= 2);
    } finally {
      stop.abort();
      await link.done;
    }
    // The control plane handles the stream in order; the inventory as the hub's.
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const inv = createInventory({ store, clock: createManualClock(Date.now() + 60_000) });
    await inv.register(create(NodeInfoSchema, { id: { id: "admin" } }), "admin");
    const order: string[] = [];
    let afterResult: string | undefined;
    let resultSeen = false;
    for (const m of got) {
      const k = m.kind;
      if (k.case === "hello" || k.case === "heartbeat") {
        const h = k.value.health;
        if (h !== undefined) await inv.heartbeat(create(HealthSchema, h));
        order.push(k.case === "hello" ? "hello" : `beat${k.value.sequence}`);
      } else if (k.case === "result") {
        resultSeen = true;
        order.push("result");
        continue;
      }
      if (resultSeen && afterResult === undefined && k.case === "heartbeat")
        afterResult = ((await inv.getNode("admin"))?.vms ?? []).map((v) => v.id).join(",");
    }
    await store.close();
    assert.equal(
      afterResult,
      "",
      `the stream: ${order.join(" ")}; node admin's VMs after the first heartbeat past the delete's result: ${afterResult}`,
    );
  });
});
