import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createManualClock, silentLogger } from "../core/index.js";
import {
  OperationPhase,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, getMessage } from "../store/index.js";
import { createAgentOperations, operationKey } from "./agent-operations.js";

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

  it("writes a delivery and a result on the version a watch showed, and never over a later one", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ops-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const ops = createAgentOperations(store, createManualClock(1_000));
      await ops.submit(
        "node-a",
        {
          operationId: "op-1",
          kind: OperationKind.START_VM,
          vmId: "vm-1",
          params: { ticket: "t-1" },
          generation: 0n,
        },
        "test",
      );
      const key = operationKey("node-a", "op-1");
      const seen = await getMessage(store, OperationRecordSchema, key);
      assert.ok(seen !== undefined);
      // Fresh: written on it.
      assert.ok((await ops.delivered("node-a", "op-1", "rpcd-1", undefined, seen)) !== undefined);
      // The version in hand is now stale: a cancel was asked since. The result must not
      // drop it, nor the delivery before it.
      await ops.requestCancel("node-a", "op-1");
      const result = {
        $typeName: "debvisor.v1.OperationResult" as const,
        operationId: "op-1",
        outcome: OperationOutcome.SUCCEEDED,
        reason: "",
        message: "",
        replayed: false,
      };
      assert.equal(await ops.finish("node-a", result, undefined, undefined, seen), true);
      const after = (await getMessage(store, OperationRecordSchema, key))?.message;
      assert.equal(after?.phase, OperationPhase.DONE);
      assert.equal(after?.cancelRequested, true);
      assert.equal(after?.deliveries, 1);
      assert.equal(after?.deliveredBy, "rpcd-1");
      assert.equal(after?.dispatch?.params.ticket, undefined);
      // The watcher's copy is untouched (its dispatch, ticket included, may still be on its way).
      assert.equal(seen.message.phase, OperationPhase.PENDING);
      assert.equal(seen.message.dispatch?.params.ticket, "t-1");
      // Done: a stale version does not write again.
      assert.equal(await ops.finish("node-a", result, undefined, undefined, seen), false);
    } finally {
      await store.close();
    }
  });
});
