// Two streams of one node to one control-plane process: the newer
// connection holds the node, whichever Hello finishes first. An adversarial
// review (December) found that the stream registered last won instead: a
// stream (a stolen certificate) whose presence was written first but whose
// Hello report was slower to record replaced the real agent's newer stream,
// and the replaced stream's end then deleted the node's presence record,
// so every other replica saw no agent while the older stream held the node.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { Inventory } from "../src/cluster/index.js";
import { silentLogger } from "../src/core/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";

describe("two streams of one node to one process", () => {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-stream-order-")), "state.db"),
    logger: silentLogger,
  });
  // The first Hello's report is recorded only once the test says so (a slow
  // write: a large report, a conflict with the other stream's, a slow store).
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  let heartbeats = 0;
  const { hub, close } = hubOn(store, (real) => {
    const inventory: Inventory = Object.create(real);
    inventory.heartbeat = async (health, signal, reporter) => {
      if (++heartbeats === 1) await held;
      return real.heartbeat(health, signal, reporter);
    };
    return inventory;
  });
  after(async () => {
    close();
    await store.close();
  });

  it("keeps the newer connection when the older one's Hello finishes last", async () => {
    const older = connectInProcess(hub, "node-a", ["op:start-vm"]);
    // Its presence is written; its report waits.
    const presence = await eventually(async () => {
      const got = await store.get("agents/node-a");
      assert.ok(got !== undefined, "the older stream's presence is written");
      return got;
    });
    const newer = connectInProcess(hub, "node-a", ["op:start-vm"]);
    try {
      await eventually(() => assert.ok(newer.received.some((m) => m.kind.case === "welcome")));
      const latest = await store.get("agents/node-a");
      assert.ok(latest !== undefined && latest.modRevision > presence.modRevision);
      release();
      await eventually(() =>
        assert.ok(older.received.some((m) => m.kind.case === "welcome") || heartbeats >= 2),
      );
      await new Promise((r) => setTimeout(r, 200));
      // Whichever stream holds the node gets what is pushed to it.
      assert.ok(hub.push("node-a", { kind: { case: "cancel", value: { operationId: "probe" } } }));
      const probed = (a: typeof older) =>
        a.received.some((m) => m.kind.case === "cancel" && m.kind.value.operationId === "probe");
      // Until one of them has it (not a fixed 100 ms a loaded machine may outlast).
      await eventually(() => probed(newer) || probed(older), { timeoutMs: 15_000 });
      assert.ok(probed(newer), "the newer connection holds the node");
      assert.ok(!probed(older), "the older connection does not");
      const stored = await store.get("agents/node-a");
      assert.ok(stored !== undefined, "the node's presence stays while its stream is up");
    } finally {
      await older.close();
      await newer.close();
    }
  });
});
