import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  startClusterHarness,
  startPeerHarness,
} from "../../test/helpers/cluster-harness.js";
import { passUnderWay } from "../../test/helpers/held-passes.js";
import { RpcError } from "../core/index.js";
import type { RecoveringDriver } from "../drivers/index.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";

/** Starts held until their signal aborts (a start the daemon's shutdown cut short), then refused. */
function heldStarts() {
  const held: string[] = [];
  let holding = true;
  return {
    held,
    stopHolding() {
      holding = false;
    },
    wrap: (d: RecoveringDriver): RecoveringDriver => ({
      ...d,
      async start(vmId, signal, options) {
        if (!holding) return d.start(vmId, signal, options);
        held.push(vmId);
        await new Promise<void>((resolve) => {
          if (signal.aborted) resolve();
          signal.addEventListener("abort", () => resolve(), { once: true });
        });
        throw new RpcError("CANCELLED");
      },
    }),
  };
}

// From the review of the concurrent failover pass (3471ea4): the HA restore clears a VM's
// mark before it sends the start ("decided once"), and puts it back if the start does not
// happen. A daemon stopped while its pass had such starts under way (up to maxParallel now)
// cut them short, and the put-back was written under the stopped pass's signal (refused at
// once) and raced the controller's resignation (its election compare then failed): the
// marks stayed cleared, the VMs stopped, and the next leader never started them again.
describe("HA restore when the controller stops mid-pass", () => {
  let a: ClusterHarness | undefined;
  let b: ClusterHarness | undefined;
  afterEach(async () => {
    await b?.close();
    await a?.close();
    a = b = undefined;
  });

  it("an HA vm whose start again was cut short by the shutdown is started by the next leader", async () => {
    const starts = heldStarts();
    a = await startClusterHarness({ nodes: 3, vmsPerNode: 6, failover: true, driver: starts.wrap });
    b = await startPeerHarness(a, 3, 6);
    const ca = a.runtime.controller;
    const cb = b.runtime.controller;
    assert.ok(ca && cb);
    await ca.tick();
    assert.ok(ca.isLeader());
    const ha = ((await a.inventory.getNode("node-02"))?.vms ?? []).filter(
      (vm) => vm.ha && vm.state === VmState.RUNNING,
    );
    assert.ok(ha.length > 0);
    // Cut off past its self-fence but back before the fence delay: its HA vms are noted lost.
    a.sim.faults.partitionNode("node-02");
    for (let t = 0; t < HARNESS_FENCE_MS + 1000; t += 500) {
      a.clock.advance(500);
      await a.beat();
      await ca.tick();
    }
    for (const vm of ha) assert.equal(a.sim.locate(vm.id)?.state, "stopped", "it fenced itself");
    a.sim.faults.healNode("node-02");
    // Back: a's pass starts them again, and its starts hang until a's controller stops.
    const passA = (await passUnderWay(a, () => starts.held.length > 0, 6000, 2000))?.pass;
    assert.ok(passA, "a's pass started an HA vm again");
    await ca.close();
    await passA;
    starts.stopHolding();
    // The other daemon leads now: every HA vm of node-02 runs again on it.
    for (let i = 0; i < 12 && ha.some((vm) => a?.sim.locate(vm.id)?.state !== "running"); i++) {
      a.clock.advance(500);
      await a.beat();
      await cb.tick();
    }
    assert.ok(cb.isLeader(), "b leads");
    for (const vm of ha)
      assert.deepEqual(
        a.sim.locate(vm.id),
        { nodeId: "node-02", state: "running" },
        `${vm.id} (held: ${starts.held.join(", ")})`,
      );
    assert.deepEqual(a.sim.violations(), []);
  });
});
