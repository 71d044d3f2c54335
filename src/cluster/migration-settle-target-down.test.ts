import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import { createInventory } from "./inventory.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettler } from "./migration-settle.js";

/**
 * Found by the third review (older than the fixes it reviewed): a migration
 * orphaned after the hand-over whose target then died was never settled.
 * The source answered (READY, its reports taken, without the VM), and
 * asking the down target threw, every pass ("reconcile failed; will
 * retry"). The VM's lock was held for good, and its record stayed on a
 * source without it, so failover (which follows the placement) never
 * restarted it. Now the source decides: without the VM, the VM went over;
 * with it, the migration rolled back.
 */
async function orphanWithTargetDown(sourceKeeps: boolean) {
  const dir = mkdtempSync(join(tmpdir(), "dv-target-down-"));
  const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const T = 1_700_000_000_000;
  const clock = createManualClock(T);
  const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
  const records = createMigrationRecords(store);
  const journal = createMigrationJournal({ records, runnerId: "me", clock });
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
      downGraceMs: 60_000,
      reportWaitMs: 1500,
    });
    const settler = createMigrationSettler({
      inventory,
      executors,
      journal,
      runners: { id: "me", isAlive: async () => false, close: async () => {} },
      clock,
      logger: silentLogger,
    });
    // Hand-over done (or not, sourceKeeps); dst died right after (never reports again).
    let settled = 0;
    for (let pass = 0; pass < 12 && settled === 0; pass++) {
      for (let i = 0; i < 10; i++) {
        clock.advance(2_000);
        await report("src", clock.now(), sourceKeeps ? ["v1"] : []);
      }
      const beat = setInterval(() => {
        clock.advance(100);
        void report("src", clock.now(), sourceKeeps ? ["v1"] : []);
      }, 100);
      try {
        settled = await settler.reconcile();
      } finally {
        clearInterval(beat);
      }
    }
    const done = (await journal.list()).find((j) => j.job.id === job.id)?.job;
    return {
      settled,
      done,
      locked: await records.locked("v1"),
      placed: (await inventory.vmRecords.all()).get("v1")?.rec.nodeId,
    };
  } finally {
    inventory.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("settling a migration whose target died after it began", () => {
  it("the source without the VM: succeeded, placed on the target, lock released (failover follows)", async () => {
    const out = await orphanWithTargetDown(false);
    assert.equal(out.settled, 1);
    assert.equal(out.done?.status.state, "succeeded", out.done?.message);
    assert.equal(out.placed, "dst");
    assert.equal(out.locked, false);
  });

  it("the source still with the VM: rolled back, placed on the source, lock released", async () => {
    const out = await orphanWithTargetDown(true);
    assert.equal(out.settled, 1);
    assert.equal(out.done?.status.state, "failed", out.done?.message);
    assert.equal(out.placed, "src");
    assert.equal(out.locked, false);
  });
});
