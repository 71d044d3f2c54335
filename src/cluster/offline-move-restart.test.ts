import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  manageVm,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createLocalExecutors } from "./executors.js";
import { noteSelfFenced } from "./ha-restore.js";
import { createMigrationEngine } from "./migration-engine.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createPlanner } from "./migration-planner.js";
import { createMigrationRecords } from "./migration-records.js";
import { createVmOperations } from "./vm-operations.js";

/**
 * An offline move (a drain of a VM that cannot move live) stops the VM,
 * moves it and starts it on the target. Found by review: when that start
 * failed (a node slow to answer once), the HA VM stayed stopped on the
 * target, placed there with its desired state RUNNING, and nothing started
 * it: the chaos test's end state by another path.
 */
describe("an offline move whose start on the target fails", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("leaves an HA VM to HA restore, which starts it on the target", async () => {
    h = await startClusterHarness({ nodes: 2, vmsPerNode: 4, failover: true });
    const vm = (await h.inventory.getNode("node-01"))?.vms.find(
      (v) => v.ha && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    await manageVm(h.store, vm, VmState.RUNNING);
    await h.beat();
    // No live migration, and node-02's first start times out.
    let failStart = true;
    const executors = createLocalExecutors((id) => {
      const d = h.sim.driver(id);
      if (d === undefined) return undefined;
      return Object.assign(Object.create(d) as HypervisorDriver, {
        capabilities: { ...d.capabilities, liveMigration: false },
        async start(...args: Parameters<HypervisorDriver["start"]>) {
          if (id === "node-02" && failStart) {
            failStart = false;
            throw new RpcError("BACKEND_TIMEOUT");
          }
          return d.start(...args);
        },
      });
    });
    const records = createMigrationRecords(h.store);
    const engine = createMigrationEngine({
      inventory: h.inventory,
      executors,
      planner: createPlanner({ executors, replicas: { hasReplica: async () => false } }),
      journal: createMigrationJournal({ records, runnerId: "me", clock: h.clock }),
      records,
      operations: createVmOperations(h.store, h.clock),
      runners: { id: "me", isAlive: async () => true, close: async () => {} },
      clock: h.clock,
      logger: silentLogger,
      markLostRunning: (nodeId, vmId) => noteSelfFenced(h.store, nodeId, vmId, 0),
    });
    try {
      const m = await engine.start({
        vmId: vm.id,
        target: "node-02",
        allowDowntime: true,
        kind: MigrationKind.DRAIN,
        requestedBy: "drain",
        tenant: undefined,
      });
      const done = await engine.wait(m.migrationId, AbortSignal.timeout(15_000));
      assert.equal(done.state, MigrationState.FAILED);
      assert.match(done.message, /moved to node-02 but not started there/);
      assert.deepEqual(
        [h.sim.locate(vm.id)?.nodeId, h.sim.locate(vm.id)?.state],
        ["node-02", "stopped"],
      );
      for (let i = 0; i < 10 && h.sim.locate(vm.id)?.state !== "running"; i++) {
        h.clock.advance(1000);
        await h.beat();
        await h.runtime.controller?.tick();
      }
      assert.deepEqual(
        [h.sim.locate(vm.id)?.nodeId, h.sim.locate(vm.id)?.state],
        ["node-02", "running"],
        "started again where it was moved",
      );
      assert.deepEqual(h.sim.violations(), []);
    } finally {
      await engine.close();
    }
  });
});
