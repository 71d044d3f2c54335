import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  manageVm,
  onRbd,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { msFromTimestamp } from "../core/index.js";
import { FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage } from "../store/index.js";
import { FAILOVER_RECORDS, noteSelfFenced } from "./ha-restore.js";

/** A promise and its resolve. */
interface Latch<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

function latch<T>(): Latch<T> {
  let resolve: (value: T) => void = () => {};
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("the failover controller's pass", () => {
  let h: ClusterHarness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it("keeps the self-fence mark its target made while the restart's answer was held: the vm is started again there", async () => {
    // The chaos test's seed 42 (CI): an HA vm failed over onto a node cut off just after it
    // started the vm; the node fenced it, and its answer to the restart came only after the
    // heal, after its self-fenced event had marked the vm. The controller then put its
    // restart's record over the mark, and the vm stayed stopped at its placement for good.
    let gate: { vmId: string; ran: Latch<string>; release: Latch<void> } | undefined;
    h = await startClusterHarness({
      nodes: 4,
      vmsPerNode: 6,
      failover: true,
      driver: (d) => ({
        ...d,
        async recover(vmId, from, signal, options) {
          await d.recover(vmId, from, signal, options);
          const g = gate;
          if (g === undefined || g.vmId !== vmId) return;
          // Started there, and the node is cut off before its answer gets back.
          g.ran.resolve(d.nodeId);
          await g.release.promise;
        },
      }),
    });
    const harness = h;
    const controller = harness.runtime.controller;
    assert.ok(controller);
    const vm = ((await harness.inventory.getNode("node-02"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    await manageVm(harness.store, vm, VmState.RUNNING);
    gate = { vmId: vm.id, ran: latch<string>(), release: latch<void>() };
    const g = gate;
    harness.sim.faults.partitionNode("node-02");
    let held: Promise<void> | undefined;
    let target: string | undefined;
    for (
      let t = 0;
      t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000 && target === undefined;
      t += 500
    ) {
      harness.clock.advance(500);
      await harness.beat();
      const tick = controller.tick();
      target = await Promise.race([g.ran.promise, tick.then(() => undefined)]);
      if (target !== undefined) held = tick;
    }
    assert.ok(target !== undefined && held !== undefined, "failed over");
    assert.equal(harness.sim.locate(vm.id)?.nodeId, target);
    // The target fences the vm (no lease renewal confirmed) and, once back, says so.
    const driver = harness.sim.driver(target);
    assert.ok(driver);
    await driver.stop(vm.id, { force: true, signal: AbortSignal.timeout(5000) });
    await harness.beat();
    const report = await harness.inventory.readNode(target, AbortSignal.timeout(5000));
    const reportMs = msFromTimestamp(report?.summary.health?.timestamp);
    assert.equal(await noteSelfFenced(harness.store, target, vm.id, reportMs), true);
    // Then its answer to the restart arrives: the failover succeeds.
    g.release.resolve();
    await held;
    const rec = await getMessage(harness.store, FailoverRecordSchema, FAILOVER_RECORDS + vm.id);
    assert.equal(rec?.message.lostRunning, true, "the target's mark is kept");
    for (let i = 0; i < 6 && harness.sim.locate(vm.id)?.state !== "running"; i++) {
      harness.clock.advance(500);
      await harness.beat();
      await controller.tick();
    }
    assert.deepEqual(harness.sim.locate(vm.id), { nodeId: target, state: "running" });
    assert.deepEqual(harness.sim.violations(), []);
  });
});
