import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  type ClusterHarness,
  driversWith,
  engineOn,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationKind } from "../gen/debvisor/v1/migration_pb.js";
import { encodeMessage } from "../store/index.js";
import { readPlacement } from "./vm-placement.js";

/**
 * A runner that stalls right after the hand-over (paused, its lease lost)
 * while another process settles its migration and the VM is placed elsewhere
 * (a failover) must not move the placement when it resumes. The chaos test
 * (seed 42) saw it: the VM then ran on the failover's node while placed on
 * the migration's target, whose copy had been removed.
 */
/** A migration from node-01 to node-02 whose runner stalls right after the hand-over. */
async function stalledMigration(h: ClusterHarness) {
  const vm = (await h.inventory.getNode("node-01"))?.vms[0];
  assert.ok(vm);
  let resume!: () => void;
  const resumed = new Promise<void>((r) => {
    resume = r;
  });
  let handedOver!: () => void;
  const handOver = new Promise<void>((r) => {
    handedOver = r;
  });
  // node-01's driver: the move completes on the hypervisors, then the runner stalls.
  const stalling = driversWith(h, "node-01", (d) => ({
    async migrate(...args: Parameters<HypervisorDriver["migrate"]>) {
      await d.migrate(...args);
      handedOver();
      await resumed;
    },
  }));
  const { engine, records } = engineOn(h, stalling, { runnerId: "stalled" });
  const started = await engine.start({
    vmId: vm.id,
    target: "node-02",
    allowDowntime: true,
    kind: MigrationKind.MIGRATE,
    requestedBy: "test-operator",
    tenant: undefined,
  });
  await handOver;
  assert.equal(h.sim.locate(vm.id)?.nodeId, "node-02", "the vm went over");
  return { vm, engine, records, started, resume };
}

/** What a failover by another process writes: the VM placed on node-03 at a new generation. */
async function placeOnNode03(h: ClusterHarness, vmId: string) {
  const placed = await readPlacement(h.store, vmId);
  assert.ok(placed.rec);
  const failedOver = create(VmRecordSchema, {
    ...placed.rec,
    nodeId: "node-03",
    generation: placed.rec.generation + 1n,
  });
  await h.store.put(`vms/${vmId}`, encodeMessage(VmRecordSchema, failedOver));
  return failedOver;
}

describe("a migration runner that resumes after its migration was taken over", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("leaves the placement the successor made", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 2, migrationMs: 300 });
    const { vm, engine, records, started, resume } = await stalledMigration(h);
    try {
      // Meanwhile another process claims the migration, and the vm is placed on node-03.
      let claimed = false;
      for (let i = 0; i < 20 && !claimed; i++) {
        // The runner's last progress write may still land: read again until the claim holds.
        const stored = (await records.list()).find(
          (r) => r.record.migration?.migrationId === started.migrationId,
        );
        assert.ok(stored);
        claimed = await records.claim(
          { ...stored.record, runner: "successor" },
          stored.modRevision,
          AbortSignal.timeout(5000),
        );
      }
      assert.ok(claimed, "claimed by the successor");
      const failedOver = await placeOnNode03(h, vm.id);

      resume();
      await engine.close(); // waits for the runner's end
      const after = await readPlacement(h.store, vm.id);
      assert.equal(after.rec?.nodeId, "node-03", "the successor's placement stands");
      assert.equal(after.rec?.generation, failedOver.generation);
    } finally {
      resume();
      await engine.close();
    }
  });

  it("does not write back a record that was settled and pruned meanwhile", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 2, migrationMs: 300 });
    const { vm, engine, started, resume } = await stalledMigration(h);
    try {
      // Another process settled it, and it was pruned (the newest 2,000 finished are kept).
      const key = `migrations/${started.migrationId}`;
      assert.ok(await h.store.get(key));
      await h.store.delete(key);
      const failedOver = await placeOnNode03(h, vm.id);

      resume();
      await engine.close();
      assert.equal(await h.store.get(key), undefined, "the record stays gone");
      const after = await readPlacement(h.store, vm.id);
      assert.equal(after.rec?.nodeId, "node-03", "the placement made since stands");
      assert.equal(after.rec?.generation, failedOver.generation);
    } finally {
      resume();
      await engine.close();
    }
  });
});
