// The failover controller restarts an HA VM of a dead node on another: the
// act the audit trail must not lose. Its record (the restart's migration
// record) is marked untold from the restart's begin and cleared only once the
// trail took the decision; a trail that refused it, or a controller that died
// before telling it, leaves it to a reconcile pass (migration-settle-tell.ts).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  createMigrationRecords,
  type FailoverDecision,
  readPlacement,
} from "../src/cluster/index.js";
import { silentLogger } from "../src/core/index.js";
import { Untold } from "../src/gen/debvisor/store/v1/records_pb.js";
import { MigrationKind } from "../src/gen/debvisor/v1/migration_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  manageVm,
  onRbd,
  startClusterHarness,
} from "./helpers/cluster-harness.js";
import { eventually } from "./helpers/eventually.js";

const SOURCE = "node-02";

/** The HA VM on SOURCE the test fails over, managed RUNNING. */
async function haVm(h: ClusterHarness): Promise<string> {
  const vm = ((await h.inventory.getNode(SOURCE))?.vms ?? []).find(
    (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
  );
  assert.ok(vm, `an HA vm on RBD runs on ${SOURCE}`);
  await manageVm(h.store, vm, VmState.RUNNING);
  return vm.id;
}

/** Cuts SOURCE off and runs the controller's passes until the VM is placed and running elsewhere. */
async function failOver(h: ClusterHarness, vmId: string): Promise<void> {
  h.sim.faults.partitionNode(SOURCE);
  for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 10_000; t += 1000) {
    h.clock.advance(1000);
    await h.beat();
    await h.runtime.controller?.tick();
    const placed = (await readPlacement(h.store, vmId)).rec?.nodeId ?? SOURCE;
    if (placed !== SOURCE && h.sim.locate(vmId)?.state === "running") return;
  }
  assert.fail("the vm was not restarted elsewhere");
}

/** The restart's record: the failover migration of `vmId`. */
async function restartRecord(store: KvStore, vmId: string) {
  const all = await createMigrationRecords(store).list();
  const found = all.find(
    (r) =>
      r.record.migration?.vm?.vmId === vmId && r.record.migration.kind === MigrationKind.FAILOVER,
  );
  assert.ok(found, "the restart has a record");
  return found.record;
}

const restartsOf = (told: FailoverDecision[], vmId: string) =>
  told.filter((d) => d.vmId === vmId && d.action === "restarted");

describe("a failover controller's restart, audited at least once", () => {
  it("a restart the trail refused stays marked, and a pass tells it again, once", async () => {
    const told: FailoverDecision[] = [];
    let refused = 0;
    let vmId = "";
    const h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      failover: true,
      onDecision: (d) => {
        if (d.vmId === vmId && d.action === "restarted" && refused++ === 0)
          throw new Error("the trail refused the record");
        told.push(d);
      },
    });
    try {
      vmId = await haVm(h);
      await failOver(h, vmId);
      assert.equal(refused, 1, "the controller told the restart, and the trail refused it");
      const rec = await restartRecord(h.store, vmId);
      assert.deepEqual(restartsOf(told, vmId), []);
      assert.equal(rec.untold, Untold.FAILOVER, "marked until told");

      await eventually(
        async () => {
          await h.runtime.engine.reconcile();
          const again = restartsOf(told, vmId);
          assert.equal(again.length, 1, "told again by a pass");
          assert.equal(again[0]?.migrationId, rec.migration?.migrationId);
          assert.equal(again[0]?.node, SOURCE);
          assert.equal(again[0]?.detail, `restarted on ${rec.migration?.target?.nodeId?.id}`);
        },
        { timeoutMs: 20_000 },
      );
      await eventually(async () =>
        assert.equal((await restartRecord(h.store, vmId)).untold, Untold.UNSPECIFIED),
      );
      for (let i = 0; i < 3; i++) await h.runtime.engine.reconcile();
      assert.equal(restartsOf(told, vmId).length, 1, "told once, not again");
    } finally {
      await h.close();
    }
  });

  it("a restart whose controller died before its trail took it is told by another daemon", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-restart-told-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const hung = new Promise<void>(() => {});
    const h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      failover: true,
      store,
      // The controller's trail never answers (its process is as good as dead).
      onDecision: (d) => (d.action === "restarted" ? hung : undefined),
    });
    let peer: ClusterHarness | undefined;
    try {
      const vmId = await haVm(h);
      await failOver(h, vmId);
      assert.equal((await restartRecord(store, vmId)).untold, Untold.FAILOVER);
      // The controller's process goes (its runner key with it) before telling it.
      await h.runtime.close();

      const told: FailoverDecision[] = [];
      peer = await startClusterHarness({
        store,
        sim: h.sim,
        clock: h.clock,
        failover: true,
        onDecision: (d) => {
          told.push(d);
        },
      });
      const other = peer;
      await eventually(
        async () => {
          await other.runtime.engine.reconcile();
          assert.equal(restartsOf(told, vmId).length, 1);
        },
        { timeoutMs: 20_000 },
      );
      await eventually(async () =>
        assert.equal((await restartRecord(store, vmId)).untold, Untold.UNSPECIFIED),
      );
    } finally {
      await peer?.close();
      await h.close();
      await store.close();
    }
  });
});
