import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createVmLifecycle, readPlacement } from "../src/cluster/index.js";
import type { CallContext } from "../src/core/index.js";
import { silentLogger } from "../src/core/index.js";
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
 * A forced delete racing a failover: `hvctl vm delete --force` of a managed
 * HA VM running on node-02 goes to node-02 and writes nothing to the VM's
 * record (its desired state stays RUNNING). node-02 is cut off before it runs
 * the delete. Past the fence delay the failover controller restarted the VM
 * on another node. Once node-02 is back, the delete undefines its fenced,
 * stale copy and SUCCEEDS; the settler keeps the record (it places the VM
 * elsewhere, df750e2): the operator is told the VM is deleted while it runs
 * on another node, under its record. A VM asked to go away must not be
 * restarted elsewhere, just as a VM asked to stop is not (e476e1a).
 */
describe("the failover controller and a VM asked to be deleted", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("does not restart elsewhere an HA VM whose forced delete waits on its cut-off node", async () => {
    h = await startClusterHarness({ nodes: 4, vmsPerNode: 6, failover: true });
    const controller = h.runtime.controller;
    assert.ok(controller);
    const vm = ((await h.inventory.getNode("node-02"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    // A VM created through hvctl: managed, desired running.
    const read = await readPlacement(h.store, vm.id);
    const rec = create(VmRecordSchema, {
      ...(read.rec ?? { id: vm.id }),
      id: vm.id,
      nodeId: read.rec?.nodeId || "node-02",
      managed: true,
      desiredState: VmState.RUNNING,
    });
    await h.store.put(`vms/${vm.id}`, encodeMessage(VmRecordSchema, rec));
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
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    const where = h.sim.locate(vm.id);
    assert.ok(
      where?.nodeId === "node-02" || where?.state !== "running",
      `${vm.id}, asked to be deleted, runs on ${where?.nodeId}`,
    );
    assert.deepEqual(h.sim.violations(), []);
  });
});
