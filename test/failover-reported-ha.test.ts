// Whose word makes a VM HA for the failover controller: the tenant's spec.
// A node's report (a stolen node certificate, a domain's metadata edited by
// hand) saying a VM is HA must not get a VM whose spec is not HA restarted
// elsewhere: its node does not fence a VM it does not hold for HA, so it
// may still run it there.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { readPlacement } from "../src/cluster/index.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmSpecSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { encodeMessage } from "../src/store/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  replicatedTo,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

describe("a node's report does not make a VM HA", () => {
  let h: ClusterHarness | undefined;
  afterEach(() => h?.close());

  it("a managed VM without HA, reported HA by its node, is not restarted elsewhere", async () => {
    let forged = "";
    h = await startClusterHarness({
      nodes: 4,
      vmsPerNode: 6,
      failover: true,
      // Its disks could be started elsewhere (RBD, or ZFS replicated to every other node).
      replicas: replicatedTo(["node-01", "node-03", "node-04"]),
      // node-02's reports claim HA for one of its VMs whose spec has none.
      report: (nodeId, health) =>
        nodeId !== "node-02" || forged === ""
          ? health
          : { ...health, vms: health.vms.map((v) => (v.id === forged ? { ...v, ha: true } : v)) },
    });
    const vm = ((await h.inventory.getNode("node-02"))?.vms ?? []).find(
      (v: VmInfo) => !v.ha && v.state === VmState.RUNNING,
    );
    assert.ok(vm, "node-02 runs a VM without HA");
    const read = await readPlacement(h.store, vm.id);
    await h.store.put(
      `vms/${vm.id}`,
      encodeMessage(
        VmRecordSchema,
        create(VmRecordSchema, {
          ...(read.rec ?? { id: vm.id }),
          id: vm.id,
          nodeId: read.rec?.nodeId || "node-02",
          managed: true,
          desiredState: VmState.RUNNING,
          spec: create(VmSpecSchema, {
            name: vm.name,
            vcpus: vm.vcpus,
            memoryBytes: vm.memoryBytes,
          }),
        }),
      ),
    );
    forged = vm.id;
    await h.beat();
    h.sim.faults.partitionNode("node-02");
    const controller = h.runtime.controller;
    assert.ok(controller);
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    const restarted = h.decisions.filter((d) => d.vmId === vm.id && d.action === "restarted");
    assert.deepEqual(restarted, [], `${vm.id} (spec without HA) was failed over`);
    // Nor shown as HA: the spec says what the tenant chose.
    const shown = (await h.inventory.listVms()).find((v) => v.id === vm.id);
    assert.equal(shown?.ha, false);
  });
});
