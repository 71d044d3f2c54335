import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createInventory, startDriverReporter } from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import { createSimulation } from "../src/drivers/index.js";
import { NodeReadiness } from "../src/gen/debvisor/v1/node_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../src/store/index.js";

describe("driver reports as heartbeats, for nodes the daemon drives itself", () => {
  it("records the domains a driver lists, keeps what only the inventory knows, and goes silent when the driver is unreachable", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-reporter-")), "s.db"),
      logger: silentLogger,
    });
    const clock = createManualClock(Date.UTC(2026, 10, 22));
    const sim = createSimulation({ nodes: 2, vmsPerNode: 3, clock });
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 3000 });
    const [info] = sim.nodes;
    const driver = sim.driver("node-01");
    assert.ok(info !== undefined && driver !== undefined);
    try {
      // A first, rich report (as an agent would send) tells the inventory disks; tenants are assigned.
      await inventory.register(info, "driver:simulation");
      const rich = sim.heartbeat("node-01");
      assert.ok(rich);
      await inventory.heartbeat(rich);
      await inventory.seedTenants(rich.vms, "test"); // as dev mode assigns them
      const reporter = await startDriverReporter({
        inventory,
        nodes: [{ info, driver }],
        clock,
        logger: silentLogger,
        intervalMs: 3_600_000,
      });
      const vm = rich.vms[0];
      assert.ok(vm);
      await driver.stop(vm.id, { force: true, signal: AbortSignal.timeout(1000) });
      clock.advance(1000);
      await reporter.report();
      const seen = await inventory.findVm(vm.id);
      assert.equal(seen?.state, VmState.STOPPED, "state comes from the driver");
      assert.equal(seen?.tenant, vm.tenant, "tenant is kept from the inventory");
      assert.equal(seen?.disks.length, vm.disks.length);
      assert.equal((await inventory.getNode("node-01"))?.vms.length, 3);

      sim.faults.killNode("node-01");
      clock.advance(4000);
      await reporter.report();
      assert.equal(
        (await inventory.getNode("node-01"))?.summary.readiness,
        NodeReadiness.NOT_READY,
      );
      reporter.close();
    } finally {
      sim.close();
      inventory.close();
      await store.close();
    }
  });
});
