import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  startClusterHarness,
  startPeerHarness,
} from "../../test/helpers/cluster-harness.js";
import { heldStarts, restoreUnderWay } from "../../test/helpers/held-passes.js";
import { RpcError } from "../core/index.js";

// An adversarial review: the HA restore clears a VM's mark when it decides a start, and puts
// it back if the start fails, under the election the start was decided under. A leader whose
// lease ran out while a start was under way (a stalled process, an etcd blip longer than the
// lease) had its put-back refused when the start failed: the mark stayed cleared, the VM
// stopped on its node, and the next leader never started it again.
describe("HA restore when the leadership moves while a start is under way", () => {
  let a: ClusterHarness | undefined;
  let b: ClusterHarness | undefined;
  let release: (() => void) | undefined;
  afterEach(async () => {
    release?.();
    await b?.close();
    await a?.close();
    a = b = undefined;
  });

  it("an HA vm whose start failed after its leader was deposed is started by the next leader", async () => {
    // Held until released or cut short, then failed.
    const starts = heldStarts(
      () => new RpcError("BACKEND_FAILED", { message: "rbd: cluster unavailable" }),
    );
    release = starts.release;
    a = await startClusterHarness({ nodes: 3, vmsPerNode: 6, failover: true, driver: starts.wrap });
    b = await startPeerHarness(a, 3, 6);
    const cb = b.runtime.controller;
    assert.ok(cb);
    // node-02 cut off past its self-fence and back: a's pass starts its HA vms again, held.
    const { ha, pass: passA } = await restoreUnderWay(
      a,
      b,
      "node-02",
      () => starts.held.length > 0,
    );
    await new Promise((r) => setTimeout(r, 3500)); // a's 2 s lease runs out (real time)
    a.clock.advance(500);
    await a.beat();
    await cb.tick();
    assert.ok(cb.isLeader(), "b leads");
    // The starts fail (the storage is out a moment), then work again.
    starts.release();
    await passA;
    for (let i = 0; i < 120 && ha.some((vm) => a?.sim.locate(vm.id)?.state !== "running"); i++) {
      a.clock.advance(1000);
      await a.beat();
      await cb.tick();
    }
    for (const vm of ha)
      assert.deepEqual(
        a.sim.locate(vm.id),
        { nodeId: "node-02", state: "running" },
        `${vm.id} (held: ${starts.held.join(", ")})`,
      );
    assert.deepEqual(a.sim.violations(), []);
  });
});
