import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  engineOn,
  HARNESS_FENCE_MS,
  manageVm,
  pickVm,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { createManualClock, RpcError } from "../core/index.js";
import { createSimulation, type HypervisorDriver, type Simulation } from "../drivers/index.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { noteSelfFenced } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";

/**
 * An offline move (a drain of a VM that cannot move live) stops the VM,
 * moves it and starts it on the target. Found by review: when that start
 * failed (a node slow to answer once), the HA VM stayed stopped on the
 * target, placed there with its desired state RUNNING, and nothing started
 * it: the chaos test's end state by another path.
 */
describe("a move that cannot start its VM on the target", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  /**
   * An offline move (a drain) of an HA VM from node-01 to node-02 whose first start there
   * times out. `moveFails`: the runner's placement move fails once too (a store blink),
   * the nodes reporting meanwhile: the VM is placed on node-02 only by the job's publish,
   * and a mark made before it was refused (the VM still placed on node-01; found by review).
   */
  async function offlineMoveNotStarted(moveFails: boolean) {
    h = await startClusterHarness({ nodes: 2, vmsPerNode: 4, failover: true });
    const vm = (await h.inventory.getNode("node-01"))?.vms.find(
      (v) => v.ha && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    await manageVm(h.store, vm, VmState.RUNNING);
    await h.beat();
    // No live migration, and node-02's first start times out.
    let failStart = true;
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
          markLostRunning: (nodeId, vmId) => noteSelfFenced(h.store, nodeId, vmId, 0),
          ...(moveFails ? { inventory: failingMoveOnce(h) } : {}),
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
      assert.match(done.message, /moved to node-02 but not started there/);
      assert.deepEqual(
        [h.sim.locate(vm.id)?.nodeId, h.sim.locate(vm.id)?.state],
        ["node-02", "stopped"],
      );
      // A controller pass before node-02's next report: the placement's list must not show
      // the VM running there, or the pass takes it for a survivor and clears its mark.
      await h.runtime.controller?.tick();
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
  }

  it("an offline move (a drain) leaves an HA VM to HA restore, which starts it on the target", () =>
    offlineMoveNotStarted(false));

  it("so does one whose placement move failed: the mark is made once the job placed the VM", () =>
    offlineMoveNotStarted(true));

  /**
   * An orphaned migration of an HA VM from node-01 to node-02 (its runner
   * died), settled while the VM is stopped on `where`, whose first start
   * fails (a node slow to answer once): `arrived` has the VM moved live and
   * stopped on node-02 (its source self-fenced mid-transfer, say), else an
   * offline move left it stopped on node-01 before moving it.
   */
  async function settledNotStarted(arrived: boolean) {
    const where = arrived ? "node-02" : "node-01";
    const dir = mkdtempSync(join(tmpdir(), "dv-settle-restart-"));
    const sim = createSimulation({
      nodes: 3,
      vmsPerNode: 4,
      clock: createManualClock(Date.UTC(2026, 10, 22, 8, 0, 0)),
      migrationMs: 300,
      fenceDelayMs: HARNESS_FENCE_MS,
      stateFile: join(dir, "simulation.json"),
    });
    let failStart = true;
    const flaky: Simulation = Object.assign(Object.create(sim) as Simulation, {
      driver: (id: string) => {
        const d = sim.driver(id);
        if (d === undefined || id !== where) return d;
        // Spread, as the harness copies drivers it wraps.
        return {
          ...d,
          async start(...args: Parameters<HypervisorDriver["start"]>) {
            if (failStart) {
              failStart = false;
              throw new RpcError("BACKEND_TIMEOUT");
            }
            return d.start(...args);
          },
        };
      },
    });
    h = await startClusterHarness({ sim: flaky, failover: true, dir });
    const vm = await pickVm(
      h.inventory,
      (v) => v.ha && v.liveMigratable && v.state === VmState.RUNNING && v.nodeId?.id === "node-01",
    );
    await manageVm(h.store, vm, VmState.RUNNING);
    const { journal } = h.runtime.failover;
    const orphan = {
      ...journal.newJob({
        vm,
        source: "node-01",
        target: "node-02",
        live: arrived,
        allowDowntime: !arrived,
        kind: "migrate",
        requestedBy: "operator",
      }),
      runner: "runner-gone",
      restartAfter: !arrived,
      status: { state: "running", phase: "transferring" },
    } as const;
    assert.ok(await journal.begin(orphan, 0, AbortSignal.timeout(5000)));
    journal.disown(orphan.id);
    const signal = AbortSignal.timeout(10_000);
    if (arrived)
      await sim
        .driver("node-01")
        ?.migrate(vm.id, { nodeId: "node-02", uri: "" }, { live: true, signal });
    await sim.driver(where)?.stop(vm.id, { force: true, signal });
    await h.beat();

    await h.runtime.engine.reconcile();
    const settled = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(
      settled.state,
      arrived ? MigrationState.SUCCEEDED : MigrationState.FAILED,
      settled.message,
    );
    assert.deepEqual(
      [sim.locate(vm.id)?.nodeId, sim.locate(vm.id)?.state],
      [where, "stopped"],
      "its start there failed",
    );
    await h.runtime.controller?.tick();
    for (let i = 0; i < 10 && sim.locate(vm.id)?.state !== "running"; i++) {
      h.clock.advance(1000);
      await h.beat();
      await h.runtime.controller?.tick();
    }
    assert.deepEqual(
      [sim.locate(vm.id)?.nodeId, sim.locate(vm.id)?.state],
      [where, "running"],
      "started again where it is",
    );
    assert.deepEqual(sim.violations(), []);
  }

  it("settling an orphaned live migration whose VM arrived stopped and will not start there leaves an HA VM to HA restore", () =>
    settledNotStarted(true));

  it("settling an orphaned offline move that stopped its VM and will not start it on its source leaves an HA VM to HA restore", () =>
    settledNotStarted(false));
});

/** The harness's inventory, whose first `moveVm` fails after both nodes reported. */
function failingMoveOnce(h: ClusterHarness): Inventory {
  let failed = false;
  return Object.assign(Object.create(h.inventory) as Inventory, {
    async moveVm(...args: Parameters<Inventory["moveVm"]>) {
      if (failed) return h.inventory.moveVm(...args);
      failed = true;
      await h.beat();
      throw new RpcError("STORE_UNAVAILABLE");
    },
  });
}
