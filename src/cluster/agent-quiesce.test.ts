import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createManualClock, type RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver, QuiescingDriver } from "../drivers/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import { createInventory } from "./inventory.js";

const T = 1_700_000_000_000;

/**
 * Seen in a chaos run (seed 3, with clock-offset faults): a node's clock
 * ran 6.3 s ahead, so its reports were refused as from the future (they
 * renewed the node; their content was not stored) and the stored VM list,
 * from before a migration moved the VM off the node, stayed. A clock put
 * back does the same: reports stamped before the stored one are heard and
 * their content ignored. Settling asked the node's agent executor to quiesce (wait for a
 * report made after the job), took the next report's arrival for one, read
 * the VM on the source from the old list, and rolled the migration back:
 * the VM ran on the target while the store placed it on the source.
 */
describe("an agent node quiesced for settling", () => {
  it("answers from a report whose content is newer, not from one whose content was ignored", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-quiesce-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(T);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
    const done = new AbortController();
    try {
      await inventory.register(create(NodeInfoSchema, { id: { id: "n1" } }), "test");
      const report = (stampMs: number, vms: string[]) =>
        inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id: "n1" },
            timestamp: { seconds: BigInt(Math.floor(stampMs / 1000)) },
            vms: vms.map((id) => ({ id, state: VmState.RUNNING, nodeId: { id: "n1" } })),
          }),
        );
      // The node's clock 4 s ahead: its report, listing v1, is stored with that stamp.
      assert.equal(await report(T + 4000, ["v1"]), true);
      const executors = createAgentExecutors({
        store,
        inventory,
        operations: createAgentOperations(store, clock),
        clock,
        logger: silentLogger,
      });
      const driver = executors.forNode("n1") as HypervisorDriver & QuiescingDriver;
      let quiesced = false;
      const quiescing = driver
        .quiesce("v1", AbortSignal.any([done.signal, AbortSignal.timeout(10_000)]))
        .then(() => (quiesced = true));
      quiescing.catch(() => {});
      await sleep(300);
      // The VM has left n1 (its job ended); n1's clock is put back: its next report, without
      // v1, is stamped before the stored one. The node is heard; the content is not taken.
      clock.advance(1000);
      assert.equal(await report(T + 2000, []), false);
      await sleep(700);
      assert.equal(quiesced, false, "not quiesced on a report whose content was ignored");
      // Its clock now too far ahead (as in the chaos run: 6.3 s against 5 s allowed): the
      // report is refused as from the future, the node heard all the same.
      clock.advance(500);
      await assert.rejects(
        report(T + 1500 + 6300, []),
        (err: RpcError) => err.reason === "REPORT_FROM_FUTURE",
      );
      await sleep(700);
      assert.equal(quiesced, false, "not quiesced on a report refused as from the future");
      // A report stamped after the stored one, without v1.
      clock.advance(3500);
      assert.equal(await report(T + 6000, []), true);
      await quiescing;
      assert.equal(await driver.info("v1", AbortSignal.timeout(5000)), undefined);
    } finally {
      done.abort();
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
