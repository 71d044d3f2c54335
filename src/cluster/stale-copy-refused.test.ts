import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type ClusterHarness, startClusterHarness } from "../../test/helpers/cluster-harness.js";
import { RpcError } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { HealthSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { type AdoptedPlacement, createPlacementReconciler } from "./placement-from-truth.js";
import { reportedHolding, reportedReady } from "./stale-copies.js";
import { createStaleCopyRemover, type StaleCopyDecision } from "./stale-copy-removal.js";

const ELECTED = { key: "controllers/failover", modRevision: 0 };

/**
 * Seen after chaos seed 3: a VM placed on node-01 ran on node-02, and
 * node-01's last report still listed it. The conflict cleanup sent
 * node-02's copy its removal (once), and node-02 refused it: its copy held
 * the VM's disks (COPY_NOT_STALE). Once node-01 reported without the VM,
 * node-02's copy was the only one, but the placement from the truth never
 * takes a copy whose removal was sent, and the store placed the VM on a
 * node that did not have it for good.
 */
describe("a stale copy whose node refused its removal", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("is marked refused, and becomes the placement once the placed node no longer has the vm", async () => {
    let vm: VmInfo | undefined;
    let placedHasIt = true;
    let copyState = VmState.RUNNING;
    h = await startClusterHarness({
      nodes: 2,
      vmsPerNode: 2,
      report: (nodeId, health) => {
        if (vm === undefined) return health;
        if (nodeId === "node-01" && !placedHasIt)
          return create(HealthSchema, {
            ...health,
            vms: health.vms.filter((v) => v.id !== vm?.id),
          });
        if (nodeId === "node-02")
          return create(HealthSchema, {
            ...health,
            vms: [
              ...health.vms,
              create(VmInfoSchema, {
                id: vm.id,
                vcpus: vm.vcpus,
                memoryBytes: vm.memoryBytes,
                state: copyState,
                nodeId: { id: nodeId },
              }),
            ],
          });
        return health;
      },
    });
    vm = (await h.inventory.getNode("node-01"))?.vms[0];
    assert.ok(vm);
    const id = vm.id;
    await h.beat();
    const record = async () => (await h.inventory.vmRecords.all()).get(id)?.rec;
    assert.deepEqual(
      (await record())?.staleCopies.map((c) => c.nodeId),
      ["node-02"],
    );

    const decisions: StaleCopyDecision[] = [];
    const refusing = {
      forNode: () =>
        ({
          removeStaleCopy: async () => {
            throw new RpcError("COPY_NOT_STALE", {
              message: "the copy here holds its disks' locks; not removed",
            });
          },
        }) as unknown as HypervisorDriver,
      destination: () => {
        throw new Error("unused");
      },
    };
    await createStaleCopyRemover({
      store: h.store,
      clock: h.clock,
      conflicts: (s) => h.inventory.conflicts(s),
      executors: refusing,
      elected: () => ELECTED,
      holds: reportedHolding(h.inventory),
      ready: reportedReady(h.inventory),
      decide: (d) => void decisions.push(d),
    }).pass(AbortSignal.timeout(5000));
    assert.deepEqual(
      decisions.map((d) => d.action),
      ["failed"],
    );
    const marked = (await record())?.staleCopies[0];
    assert.equal(marked?.cleanupSent, true);
    assert.equal(marked?.removalRefused, true, "the refusal is recorded");
    // The copy stops (its state noted anew on the record): still a refused removal.
    copyState = VmState.STOPPED;
    await h.beat();
    const noted = (await record())?.staleCopies[0];
    assert.equal(noted?.state, VmState.STOPPED);
    assert.equal(noted?.removalRefused, true, "kept across reports");

    // node-01 reports without the VM: node-02's copy is the only one.
    placedHasIt = false;
    const adopted: AdoptedPlacement[] = [];
    const reconciler = createPlacementReconciler({
      store: h.store,
      inventory: h.inventory,
      elected: () => ELECTED,
      decide: (d) => adopted.push(d),
    });
    for (let i = 0; i < 3 && adopted.length === 0; i++) {
      h.clock.advance(1000);
      await h.beat();
      await reconciler.pass(AbortSignal.timeout(5000));
    }
    assert.deepEqual(
      adopted.map((a) => `${a.from}->${a.to}`),
      ["node-01->node-02"],
    );
    const now = await record();
    assert.equal(now?.nodeId, "node-02", "placed where the VM is");
    assert.deepEqual(now?.staleCopies, [], "no conflict left");
  });
});
