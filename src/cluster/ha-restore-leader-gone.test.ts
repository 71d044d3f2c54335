import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  startClusterHarness,
  startPeerHarness,
} from "../../test/helpers/cluster-harness.js";
import { heldStarts, restoreUnderWay } from "../../test/helpers/held-passes.js";
import { RpcError } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

// The HA restore clears a VM's mark when it decides a start and puts it back if the start
// does not happen: these are the ways its leader goes while such starts are under way.
describe("HA restore when its leader goes while a start is under way", () => {
  let a: ClusterHarness | undefined;
  let b: ClusterHarness | undefined;
  let release: (() => void) | undefined;
  afterEach(async () => {
    release?.();
    await b?.close();
    await a?.close();
    a = b = undefined;
  });

  // From the review of the concurrent failover pass (3471ea4): the HA restore clears a VM's
  // mark before it sends the start ("decided once"), and puts it back if the start does not
  // happen. A daemon stopped while its pass had such starts under way (up to maxParallel now)
  // cut them short, and the put-back was written under the stopped pass's signal (refused at
  // once) and raced the controller's resignation (its election compare then failed): the
  // marks stayed cleared, the VMs stopped, and the next leader never started them again.
  it("an HA vm whose start again was cut short by the shutdown is started by the next leader", async () => {
    // Held until released or cut short, then failed.
    const starts = heldStarts(() => new RpcError("CANCELLED"));
    a = await startClusterHarness({ nodes: 3, vmsPerNode: 6, failover: true, driver: starts.wrap });
    b = await startPeerHarness(a, 3, 6);
    const ca = a.runtime.controller;
    const cb = b.runtime.controller;
    assert.ok(ca && cb);
    // node-02 cut off past its self-fence and back: a's pass starts its HA vms again, held.
    const { ha, pass: passA } = await restoreUnderWay(
      a,
      b,
      "node-02",
      () => starts.held.length > 0,
    );
    await ca.close();
    await passA;
    starts.release();
    // The other daemon leads now: every HA vm of node-02 runs again on it.
    for (let i = 0; i < 12 && ha.some((vm) => a?.sim.locate(vm.id)?.state !== "running"); i++) {
      a.clock.advance(500);
      await a.beat();
      await cb.tick();
    }
    assert.ok(cb.isLeader(), "b leads");
    runAgainOnce(a, ha, starts.held);
  });

  // An adversarial review: the HA restore clears a VM's mark when it decides a start, and puts
  // it back if the start fails, under the election the start was decided under. A leader whose
  // lease ran out while a start was under way (a stalled process, an etcd blip longer than the
  // lease) had its put-back refused when the start failed: the mark stayed cleared, the VM
  // stopped on its node, and the next leader never started it again.
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
    runAgainOnce(a, ha, starts.held);
  });
});

/** Each of `ha` runs again on node-02, where it was, and no VM ever ran twice. */
function runAgainOnce(h: ClusterHarness, ha: readonly VmInfo[], held: readonly string[]) {
  for (const vm of ha)
    assert.deepEqual(
      h.sim.locate(vm.id),
      { nodeId: "node-02", state: "running" },
      `${vm.id} (held: ${held.join(", ")})`,
    );
  assert.deepEqual(h.sim.violations(), []);
}
