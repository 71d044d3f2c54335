import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import type { Inventory } from "./inventory.js";

describe("an agent's start through the executors", () => {
  it("goes under the generation its caller gives, else under the VM's current one", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-exec-gen-")), "state.db"),
      logger: silentLogger,
    });
    try {
      await store.put(
        "vms/vm-1",
        encodeMessage(
          VmRecordSchema,
          create(VmRecordSchema, { id: "vm-1", nodeId: "node-b", generation: 8n }),
        ),
      );
      const operations = createAgentOperations(store, systemClock);
      const executors = createAgentExecutors({
        store,
        inventory: { onNodeRemoved: () => () => {} } as unknown as Inventory,
        operations,
        clock: systemClock,
        logger: silentLogger,
        deliveryTimeoutMs: 100,
      });
      const driver = executors.forNode("node-a");
      assert.ok(driver);
      // No agent takes them: each is abandoned, its dispatch kept.
      await driver.start("vm-1", AbortSignal.timeout(5000), { generation: 7n }).catch(() => {});
      await driver.start("vm-1", AbortSignal.timeout(5000)).catch(() => {});
      const sent = [];
      for (const kv of (await store.range("operations/node-a/")).kvs) sent.push(kv.key);
      const generations = await Promise.all(
        sent.map(
          async (key) =>
            (await operations.get("node-a", key.slice("operations/node-a/".length)))?.dispatch
              ?.generation,
        ),
      );
      assert.deepEqual(generations.sort(), [7n, 8n]);
    } finally {
      await store.close();
    }
  });
});
