import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import { createInventory } from "./inventory.js";

describe("agent executors' view of a node's domains", () => {
  it("include its copy of a VM placed elsewhere (a migration's target while the record names the source)", async () => {
    const clock = createManualClock(1_000_000);
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-agent-exec-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const inventory = createInventory({ store, clock, heartbeatTtlMs: 10_000 });
      for (const n of ["node-b", "node-d"])
        await inventory.register(create(NodeInfoSchema, { id: { id: n }, hostname: n }), "admin");
      await store.put(
        "vms/vm-1",
        encodeMessage(
          VmRecordSchema,
          create(VmRecordSchema, { id: "vm-1", nodeId: "node-d", generation: 3n }),
        ),
      );
      const report = (node: string, second: number) =>
        inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id: node },
            timestamp: { seconds: BigInt(second), nanos: 0 },
            vms: [create(VmInfoSchema, { id: "vm-1", name: "vm-1", state: VmState.STOPPED })],
          }),
        );
      // node-d, where the record places it, still reports it (its agent paused); node-b has
      // it too: the hand-over completed.
      await report("node-d", 1);
      await report("node-b", 2);
      const executors = createAgentExecutors({
        store,
        inventory,
        operations: createAgentOperations(store, clock),
        clock,
        logger: silentLogger,
      });
      const nodeB = executors.forNode("node-b");
      assert.ok(nodeB);
      let seen: Awaited<ReturnType<typeof nodeB.info>>;
      for (let i = 0; i < 200 && seen === undefined; i++) {
        seen = await nodeB.info("vm-1", AbortSignal.timeout(5000));
        if (seen === undefined) await sleep(10);
      }
      assert.equal(seen?.state, "stopped", "node-b's hypervisor has vm-1");
      assert.deepEqual(
        (await inventory.getNode("node-b"))?.vms.map((v) => v.id),
        [],
        "while node-b's listed VMs leave it out (a conflict)",
      );
    } finally {
      await store.close();
    }
  });
});
