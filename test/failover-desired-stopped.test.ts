import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { readPlacement } from "../src/cluster/index.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { encodeMessage } from "../src/store/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

const onRbd = (vm: VmInfo) => vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

/**
 * A stop racing a failover: `hvctl vm stop` of a managed HA VM writes its
 * desired state STOPPED with the stop operation for its node, node-02; the
 * node is cut off before it runs it, so its last report still says running.
 * Past the fence delay the failover controller restarted the VM on another
 * node, against the desired state it reads in the very record it moves
 * (HA restore and the placement from the truth both leave such a VM
 * stopped). The stop, once node-02 is back, stops its fenced copy and
 * succeeds: the operator is told the VM stopped while it runs elsewhere.
 */
describe("the failover controller and a VM asked to stop", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("does not restart elsewhere an HA VM whose desired state is stopped", async () => {
    h = await startClusterHarness({ nodes: 4, vmsPerNode: 6, failover: true });
    const controller = h.runtime.controller;
    assert.ok(controller);
    const vm = ((await h.inventory.getNode("node-02"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    // What StopVm writes with its operation (the operation itself never reaches node-02).
    const read = await readPlacement(h.store, vm.id);
    const rec = create(VmRecordSchema, {
      ...(read.rec ?? { id: vm.id }),
      id: vm.id,
      nodeId: read.rec?.nodeId || "node-02",
      managed: true,
      desiredState: VmState.STOPPED,
    });
    await h.store.put(`vms/${vm.id}`, encodeMessage(VmRecordSchema, rec));
    h.sim.faults.partitionNode("node-02");
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    const where = h.sim.locate(vm.id);
    assert.ok(
      where?.nodeId === "node-02" || where?.state !== "running",
      `${vm.id}, asked to stop, runs on ${where?.nodeId}`,
    );
    assert.deepEqual(h.sim.violations(), []);
  });
});
