import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { reportedHolding } from "./stale-copies.js";

describe("reportedHolding", () => {
  it("takes a node's report as evidence that it holds a vm only while the node is READY", async () => {
    const clock = createManualClock(1_000_000);
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const inventory = createInventory({ store, clock, heartbeatTtlMs: 10_000 });
      await inventory.register(
        create(NodeInfoSchema, { id: { id: "node-d" }, hostname: "d" }),
        "a",
      );
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "node-d" },
          timestamp: { seconds: 1n, nanos: 0 },
          vms: [create(VmInfoSchema, { id: "vm-1", name: "vm-1", state: VmState.RUNNING })],
        }),
      );
      const holds = reportedHolding(inventory);
      assert.equal(await holds("node-d", "vm-1", AbortSignal.timeout(5000)), true);
      assert.equal(await holds("node-d", "vm-2", AbortSignal.timeout(5000)), false);
      // node-d goes silent: its last report still lists vm-1, which may have left it since.
      clock.advance(11_000);
      assert.equal(await holds("node-d", "vm-1", AbortSignal.timeout(5000)), false);
    } finally {
      await store.close();
    }
  });
});
