import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createManualClock, silentLogger } from "../core/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";

describe("agent operations", () => {
  it("lists a node's open operations in the order they were submitted, not by id", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ops-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const ops = createAgentOperations(store, createManualClock(1_000));
      // Ids sorting the other way round from submission, as random ids do half the time.
      const ids = ["op-c", "op-b", "op-a"];
      for (const [i, id] of ids.entries())
        await ops.submit(
          "node-a",
          {
            operationId: id,
            kind: i % 2 === 0 ? OperationKind.START_VM : OperationKind.STOP_VM,
            vmId: "vm-1",
            params: {},
            generation: 0n,
          },
          "test",
        );
      const open = await ops.open("node-a");
      assert.deepEqual(
        open.map((r) => r.dispatch?.operationId),
        ids,
      );
    } finally {
      await store.close();
    }
  });
});
