import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { readPlacement } from "../src/cluster/index.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

const onRbd = (vm: VmInfo) => vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

/**
 * A delete racing a node loss: the delete succeeded and its record is gone,
 * but the node died before its next report, so its last report still lists
 * the VM running. The failover controller restarted that VM elsewhere under
 * a record it created at generation 1: a deleted VM back to life (where the
 * storage lets a generation-1 start through), or a ghost record placing it on
 * a node that runs nothing (where the disks' locks refuse it).
 */
describe("the failover controller and a VM whose record is gone", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("does not restart elsewhere a VM the store holds no record of, and writes none", async () => {
    h = await startClusterHarness({ nodes: 4, vmsPerNode: 6, failover: true });
    const controller = h.runtime.controller;
    assert.ok(controller);
    const vm = ((await h.inventory.getNode("node-02"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    assert.ok((await readPlacement(h.store, vm.id)).rec !== undefined, "recorded at first");
    // The record a successful delete removes; node-02 dies before reporting the VM gone.
    h.sim.faults.partitionNode("node-02");
    await h.store.delete(`vms/${vm.id}`);
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    const where = h.sim.locate(vm.id);
    assert.ok(
      where === undefined || where.nodeId === "node-02",
      `${vm.id}, deleted, was restarted on ${where?.nodeId}`,
    );
    assert.equal((await readPlacement(h.store, vm.id)).rec, undefined, "a record was written");
  });
});
