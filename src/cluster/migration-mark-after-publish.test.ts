import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  engineOn,
  manageVm,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { RpcError } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { noteSelfFenced } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";

/**
 * An HA VM an offline move stopped and could not start on its target is
 * marked for HA restore once the job is published (which commits its
 * placement there). Marked before, after a placement move that failed ("heartbeats
 * will"), the mark was refused: the VM was still placed on the source, the
 * target's report of it a stale copy while the job held it; the publish then
 * placed it on the target, stopped and unmarked (found by review).
 */
describe("the runner's HA mark when its placement move failed", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("an offline move whose placement move failed once still leaves an HA VM to HA restore", async () => {
    h = await startClusterHarness({ nodes: 2, vmsPerNode: 4, failover: true });
    const vm = (await h.inventory.getNode("node-01"))?.vms.find(
      (v) => v.ha && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    await manageVm(h.store, vm, VmState.RUNNING);
    await h.beat();
    let failStart = true;
    let failMove = true;
    // The store blinks during the runner's placement move; meanwhile both nodes report
    // (node-01 without the VM, node-02 with it, stopped).
    const inventory: Inventory = Object.assign(Object.create(h.inventory) as Inventory, {
      async moveVm(...args: Parameters<Inventory["moveVm"]>) {
        if (failMove) {
          failMove = false;
          await h.beat();
          throw new RpcError("STORE_UNAVAILABLE");
        }
        return h.inventory.moveVm(...args);
      },
    });
    const { engine } = engineOn(
      h,
      (id) => {
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
      },
      {
        overrides: {
          inventory,
          markLostRunning: (nodeId, vmId) => noteSelfFenced(h.store, nodeId, vmId, 0),
        },
      },
    );
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
      assert.equal(failMove, false, "the placement move failed once");
      assert.deepEqual(
        [h.sim.locate(vm.id)?.nodeId, h.sim.locate(vm.id)?.state],
        ["node-02", "stopped"],
      );
      await h.runtime.controller?.tick();
      for (let i = 0; i < 10 && h.sim.locate(vm.id)?.state !== "running"; i++) {
        h.clock.advance(1000);
        await h.beat();
        await h.runtime.controller?.tick();
      }
      assert.deepEqual(
        [h.sim.locate(vm.id)?.nodeId, h.sim.locate(vm.id)?.state],
        ["node-02", "running"],
        "an HA VM placed on node-02, stopped, is started again",
      );
    } finally {
      await engine.close();
    }
  });
});
