import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connectInProcess, hubOn } from "../../test/helpers/agent-stream.js";
import { eventually } from "../../test/helpers/eventually.js";
import { RpcError, silentLogger } from "../core/index.js";
import { canRecover } from "../drivers/index.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";

/** How long the target may be NOT_READY with the recover before it is presumed dead (the daemon: the fence delay). */
const GRACE_MS = 5_000;

// From the review of the concurrent failover pass (3471ea4): a failover's RECOVER taken by
// its target's agent, the target then dying (power lost, cut off for good), was waited for
// without end: nothing finishes an operation a stream took once its node is gone. The
// failover controller's pass awaits every restart it began, and the next pass starts only
// after it: no HA VM of any node was restarted again, and the VM's lock stayed held, until
// the daemon restarted. A migration's MIGRATE_OUT had the same wait bounded already (its
// source presumed dead past the grace); RECOVER now is too.
describe("a failover's recover on a target that dies with it", () => {
  it("ends OPERATION_INTERRUPTED once the target has been NOT_READY past the grace, not never", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-recover-down-")), "state.db"),
      logger: silentLogger,
    });
    const { hub, inventory, clock, close } = hubOn(store);
    const executors = createAgentExecutors({
      store,
      inventory,
      operations: hub.operations,
      clock,
      logger: silentLogger,
      deliveryTimeoutMs: 10_000,
      downGraceMs: GRACE_MS,
    });
    const stop = new AbortController();
    try {
      const agent = connectInProcess(hub, "dst", ["op:recover"]);
      await eventually(() => assert.ok(hub.connectedNodes().includes("dst")));
      const driver = executors.forNode("dst");
      assert.ok(driver !== undefined && canRecover(driver), "an agent driver recovers");
      let outcome: unknown = "pending";
      const recovering = driver
        .recover("vm-1", "src", stop.signal, { generation: 2n })
        .then(
          () => "resolved",
          (err: unknown) => err,
        )
        .then((o: unknown) => {
          outcome = o;
        });
      // The agent takes it, then its node dies: the stream goes, no result ever comes.
      await eventually(() =>
        assert.ok(
          agent.received.some((m) => m.kind.case === "dispatch"),
          "dispatched",
        ),
      );
      await agent.close();
      // Time passes with no report from dst (the manual clock of its liveness).
      let down = false;
      for (let i = 0; i < 200 && !down; i++) {
        clock.advance(1_000);
        const node = await inventory.getNode("dst");
        down =
          node?.summary.readiness === NodeReadiness.NOT_READY &&
          Number(node.summary.notReadyForMs) > GRACE_MS + 2_000;
      }
      assert.ok(down, "dst is NOT_READY past the grace");
      // Looked at about every second: given a few seconds of real time, not a lifetime.
      for (let i = 0; i < 100 && outcome === "pending"; i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(outcome instanceof RpcError, `the recover ended: ${String(outcome)}`);
      assert.equal(outcome.reason, "OPERATION_INTERRUPTED");
      await recovering;
    } finally {
      stop.abort();
      close();
      await store.close();
    }
  });
});
