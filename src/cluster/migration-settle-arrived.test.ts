import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import type { Executors } from "./executors.js";
import { createInventory } from "./inventory.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettler } from "./migration-settle.js";

/**
 * Seen twice by the chaos test (seed 7): a migration between agents whose
 * runner (a daemon) was killed right before the hand-over. The target
 * reported the arrived VM while its record still placed it on the source,
 * whose own last report still listed it: the inventory kept the copy out of
 * the target's report as a conflict, and a stopped one stays one. Settling
 * asks the nodes through their reports (as agents' executors do), found the
 * VM on neither node, and left the migration RUNNING and its lock held for
 * a minute, then said "operator action needed"; an HA VM stayed down.
 */
describe("settling a migration whose vm arrived unseen", () => {
  it("finds it on the target from its record, settles SUCCEEDED and places it there", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-arrived-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
    try {
      const vm = create(VmInfoSchema, {
        id: "v1",
        state: VmState.STOPPED,
        vcpus: 1,
        memoryBytes: 1024n ** 3n,
      });
      let at = 1n;
      const report = async (node: string, vms: VmInfo[]) => {
        await inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id: node },
            timestamp: { seconds: 900n + at++ },
            vms: vms.map((v) => ({
              id: v.id,
              state: v.state,
              vcpus: v.vcpus,
              memoryBytes: v.memoryBytes,
              nodeId: { id: node },
            })),
          }),
        );
      };
      for (const id of ["src", "dst"])
        await inventory.register(create(NodeInfoSchema, { id: { id } }), "test");
      await report("src", [vm]);
      await report("dst", []);

      // The migration src -> dst, run by a daemon that died.
      const records = createMigrationRecords(store);
      const journal = createMigrationJournal({ records, runnerId: "me", clock });
      const job = {
        ...journal.newJob({
          vm: { ...vm, nodeId: { $typeName: "debvisor.v1.NodeId", id: "src" } },
          source: "src",
          target: "dst",
          live: false,
          allowDowntime: true,
          kind: "migrate",
          requestedBy: "operator",
        }),
        runner: "dead",
        status: { state: "running", phase: "transferring" },
      } as const;
      assert.ok(await journal.begin(job, 0, AbortSignal.timeout(5000)));
      journal.disown(job.id);

      // The hand-over: dst reports the VM before src's next report drops it, then src does.
      await report("dst", [vm]);
      await report("src", []);
      await report("dst", [vm]);
      assert.equal(await inventory.findVm("v1"), undefined, "kept out of every report");

      // The nodes answer from their reports, as agents' executors do.
      const fromReports = (node: string) =>
        ({
          info: async (id: string) => {
            const got = await inventory.getNode(node);
            const v = got?.vms.find((x) => x.id === id);
            return v === undefined
              ? undefined
              : { id, state: "stopped", vcpus: 1, memoryBytes: 0n, persistent: true };
          },
        }) as unknown as HypervisorDriver;
      const executors: Executors = {
        forNode: fromReports,
        destination: () => ({ nodeId: "", uri: "" }),
      };
      const settler = createMigrationSettler({
        inventory,
        executors,
        journal,
        runners: { id: "me", isAlive: async () => false, close: async () => {} },
        clock,
        logger: silentLogger,
      });
      assert.equal(await settler.reconcile(), 1);
      const settled = (await journal.list()).find((j) => j.job.id === job.id)?.job;
      assert.equal(settled?.status.state, "succeeded", settled?.message);
      assert.match(settled?.message ?? "", /the vm is on dst/);
      // Placed there: its next report lists it.
      await report("dst", [vm]);
      assert.equal((await inventory.findVm("v1"))?.nodeId?.id, "dst");
      assert.deepEqual((await inventory.vmRecords.all()).get("v1")?.rec.staleCopies, []);
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
