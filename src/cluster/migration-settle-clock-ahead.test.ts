import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, type RpcError, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import { createInventory } from "./inventory.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettler } from "./migration-settle.js";

/**
 * From the review of cf3f5b8: an orphaned migration whose source's clock
 * stays 6 s ahead (every report refused as from the future, the node READY)
 * cannot be settled from the truth: the source's stored list is from before
 * the hand-over. Settling waited for a newer report until its signal (60 s
 * in the daemon, and the daemon's start-up awaits its first pass). Now the
 * wait is bounded: the pass ends soon, settles nothing (the migration stays
 * RUNNING with its lock), and once the clock is right a later pass settles
 * it from a report made after the hand-over.
 */
describe("settling with a source whose clock stays ahead", () => {
  it("leaves the migration to a later pass without blocking, then settles it once the source's reports are taken", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-review-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const T = 1_700_000_000_000;
    const clock = createManualClock(T);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
    const records = createMigrationRecords(store);
    const journal = createMigrationJournal({ records, runnerId: "me", clock });
    const stop = new AbortController();
    try {
      for (const id of ["src", "dst"])
        await inventory.register(create(NodeInfoSchema, { id: { id } }), "test");
      const report = (node: string, stampMs: number, vms: string[]) =>
        inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id: node },
            timestamp: { seconds: BigInt(Math.floor(stampMs / 1000)) },
            vms: vms.map((id) => ({ id, state: VmState.RUNNING, nodeId: { id: node } })),
          }),
        );
      await report("src", T, ["v1"]);
      await report("dst", T, []);
      const job = {
        ...journal.newJob({
          vm: {
            $typeName: "debvisor.v1.VmInfo",
            id: "v1",
            state: VmState.RUNNING,
            nodeId: { $typeName: "debvisor.v1.NodeId", id: "src" },
          } as never,
          source: "src",
          target: "dst",
          live: true,
          allowDowntime: false,
          kind: "migrate",
          requestedBy: "operator",
        }),
        runner: "dead",
        status: { state: "running", phase: "transferring" },
      } as const;
      assert.ok(await journal.begin(job, 0, AbortSignal.timeout(5000)));
      journal.disown(job.id);
      const executors = createAgentExecutors({
        store,
        inventory,
        operations: createAgentOperations(store, clock),
        clock,
        logger: silentLogger,
        reportWaitMs: 1500,
      });
      // The hand-over happened; src's clock is now 6 s ahead: it keeps reporting (READY),
      // every report refused as from the future. dst reports the arrived VM.
      let ahead = 6000;
      const beats = (async () => {
        for (let i = 0; i < 300 && !stop.signal.aborted; i++) {
          clock.advance(100);
          await report("src", clock.now() + ahead, []).catch((e: RpcError) =>
            assert.equal(e.reason, "REPORT_FROM_FUTURE"),
          );
          await report("dst", clock.now(), ["v1"]);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const settler = createMigrationSettler({
        inventory,
        executors,
        journal,
        runners: { id: "me", isAlive: async () => false, close: async () => {} },
        clock,
        logger: silentLogger,
      });
      for (let pass = 0; pass < 2; pass++) {
        const t0 = Date.now();
        assert.equal(await settler.reconcile(), 0, "nothing settled from a list made before");
        assert.ok(Date.now() - t0 < 10_000, `a pass took ${Date.now() - t0} ms`);
        const state = (await journal.list()).find((j) => j.job.id === job.id)?.job.status.state;
        assert.equal(state, "running");
        assert.equal(await records.locked("v1"), true);
        assert.equal(
          (await inventory.getNode("src"))?.summary.readiness,
          NodeReadiness.READY,
          "the source was READY all along",
        );
      }
      // The source's clock is right again: its reports are taken, without v1.
      ahead = 0;
      assert.equal(await settler.reconcile(), 1);
      const settled = (await journal.list()).find((j) => j.job.id === job.id)?.job;
      assert.equal(settled?.status.state, "succeeded", settled?.message);
      assert.equal((await inventory.vmRecords.all()).get("v1")?.rec.nodeId, "dst");
      assert.equal(await records.locked("v1"), false);
      stop.abort();
      await beats;
    } finally {
      stop.abort();
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
