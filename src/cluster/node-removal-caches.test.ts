import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import { createAgentPresence } from "./agent-presence.js";
import { createInventory } from "./inventory.js";

/** Polls `check` every 20 ms for at most 20 s (the deletes come by watch; a loaded machine is slow). */
async function soon(what: string, check: () => boolean): Promise<void> {
  const until = Date.now() + 20_000;
  while (!check() && Date.now() < until) await sleep(20);
  assert.ok(check(), what);
}

/**
 * Seen with node churn: a control plane kept, for the life of its process,
 * an agent driver and the lease liveness's bookkeeping (when it last
 * renewed each node's fence lease, when it saw each lose its READY key)
 * for every node ever removed: memory grew with every node that came and went.
 */
describe("a removed node's per-node state in the control plane", () => {
  it("is dropped, whether this process or another removed the record", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-removal-caches-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const inventory = createInventory({
      store,
      clock: systemClock,
      heartbeatTtlMs: 30_000,
      liveness: "lease",
      logger: silentLogger,
    });
    try {
      const executors = createAgentExecutors({
        store,
        inventory,
        operations: createAgentOperations(store, systemClock),
        clock: systemClock,
        logger: silentLogger,
      });
      const before = inventory.livenessTracked();
      for (const id of ["n1", "n2", "n3"])
        await inventory.register(create(NodeInfoSchema, { id: { id } }), "test");
      // n1 and n2 heartbeat (their fence leases renewed here); n3 never does (seen NOT_READY).
      for (const id of ["n1", "n2"])
        await inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id },
            timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
          }),
        );
      await inventory.listNodes();
      assert.equal(inventory.livenessTracked(), before + 3);
      const drivers = new Map(["n1", "N2", "n2", "n3"].map((id) => [id, executors.forNode(id)]));
      assert.equal(executors.forNode("n1"), drivers.get("n1"), "a node's driver is kept");

      // n1 removed by this process; n2 and n3 by another (the watch brings the deletes).
      // n1's agent, whose certificate spells it N1, registered it so (its Hello does) and was
      // connected to a process that crashed: its presence record, keyed N1, stayed.
      await inventory.register(create(NodeInfoSchema, { id: { id: "N1" } }), "test");
      const n1 = await inventory.readNode("n1");
      assert.ok(n1);
      const presence = createAgentPresence(store);
      await presence.connected("N1", create(AgentPresenceRecordSchema, { serverId: "gone" }));
      assert.equal(await inventory.remove("n1", n1.unchanged), true);
      assert.equal(
        await presence.current("N1"),
        undefined,
        "the removed node's agent presence goes with it (its NodeService reports are taken again)",
      );
      await store.delete("nodes/n2");
      await store.delete("nodes/n3");

      await soon(
        "the liveness keeps nothing of removed nodes",
        () => inventory.livenessTracked() === before,
      );
      for (const [id, d] of drivers)
        assert.notEqual(executors.forNode(id), d, `${id}: a removed node's driver is dropped`);
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
