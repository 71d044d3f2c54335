// What the failover controller must leave down: an HA VM whose node is cut
// off is restarted elsewhere past the fence delay, unless the control plane
// was asked for it not to run. Each case cuts node-02 off with one of its
// running HA VMs (RBD disks) in a given state of the store, runs the
// controller past the fence delay, and looks where the VM runs.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createVmLifecycle, readPlacement } from "../src/cluster/index.js";
import type { CallContext } from "../src/core/index.js";
import { silentLogger } from "../src/core/index.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { encodeMessage } from "../src/store/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

describe("the failover controller leaves down what should not run", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  /** A running HA VM of node-02 (RBD disks), in a started harness with the controller on. */
  async function haVmOfNode02(): Promise<VmInfo> {
    h = await startClusterHarness({ nodes: 4, vmsPerNode: 6, failover: true });
    const vm = ((await h.inventory.getNode("node-02"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    return vm;
  }

  /** Writes the VM's record as managed, with `desiredState`. */
  async function manage(vm: VmInfo, desiredState: VmState): Promise<void> {
    const read = await readPlacement(h.store, vm.id);
    const rec = create(VmRecordSchema, {
      ...(read.rec ?? { id: vm.id }),
      id: vm.id,
      nodeId: read.rec?.nodeId || "node-02",
      managed: true,
      desiredState,
    });
    await h.store.put(`vms/${vm.id}`, encodeMessage(VmRecordSchema, rec));
  }

  /** Runs the controller until well past node-02's fence delay; answers where the VM is. */
  async function pastFenceDelay(vm: VmInfo) {
    const controller = h.runtime.controller;
    assert.ok(controller);
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    assert.deepEqual(h.sim.violations(), []);
    return h.sim.locate(vm.id);
  }

  /**
   * A stop racing a failover: `hvctl vm stop` writes desired STOPPED with the
   * stop operation for node-02, which is cut off before it runs it (its last
   * report still says running). The controller restarted the VM elsewhere,
   * against the desired state in the very record it moves; the stop, once
   * node-02 was back, stopped its fenced copy and succeeded.
   */
  it("an HA VM whose stop waits on its cut-off node", async () => {
    const vm = await haVmOfNode02();
    await manage(vm, VmState.STOPPED);
    h.sim.faults.partitionNode("node-02");
    const where = await pastFenceDelay(vm);
    assert.ok(
      where?.nodeId === "node-02" || where?.state !== "running",
      `${vm.id}, asked to stop, runs on ${where?.nodeId}`,
    );
  });

  /**
   * A forced delete racing a failover: DeleteVm wrote nothing to the record
   * (desired still running), so the controller restarted the VM elsewhere;
   * the late delete undefined node-02's fenced copy and SUCCEEDED, and the
   * settler kept the record placing the VM elsewhere: told it was deleted,
   * the operator had it running on another node.
   */
  it("an HA VM whose forced delete waits on its cut-off node", async () => {
    const vm = await haVmOfNode02();
    await manage(vm, VmState.RUNNING);
    h.sim.faults.partitionNode("node-02");
    // DeleteVm as the daemon serves it (no runner here: the operation waits, as on a cut-off node).
    const lifecycle = createVmLifecycle({ inventory: h.inventory, store: h.store, clock: h.clock });
    const ctx = {
      principal: { id: "admin" },
      signal: new AbortController().signal,
      log: silentLogger,
    } as unknown as CallContext;
    const op = await lifecycle.deleteVm(
      { vmId: vm.id, force: true, requestId: "delete-1" } as Parameters<
        typeof lifecycle.deleteVm
      >[0],
      ctx,
    );
    assert.notEqual(op.id, "");
    const where = await pastFenceDelay(vm);
    assert.ok(
      where?.nodeId === "node-02" || where?.state !== "running",
      `${vm.id}, asked to be deleted, runs on ${where?.nodeId}`,
    );
  });

  /**
   * A delete that succeeded removed the record, but node-02 died before its
   * next report, so its last report still lists the VM running. The
   * controller restarted it elsewhere under a record it created at
   * generation 1: a deleted VM back to life (where the storage let the start
   * through), or a ghost record placing it where nothing runs it.
   */
  it("a VM the store holds no record of (deleted), and writes none", async () => {
    const vm = await haVmOfNode02();
    assert.ok((await readPlacement(h.store, vm.id)).rec !== undefined, "recorded at first");
    h.sim.faults.partitionNode("node-02");
    await h.store.delete(`vms/${vm.id}`);
    const where = await pastFenceDelay(vm);
    assert.ok(
      where === undefined || where.nodeId === "node-02",
      `${vm.id}, deleted, was restarted on ${where?.nodeId}`,
    );
    assert.equal((await readPlacement(h.store, vm.id)).rec, undefined, "a record was written");
  });
});
