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
import { fromBinary } from "@bufbuild/protobuf";
import {
  createMigrationRecords,
  type FailoverDecision,
  readPlacement,
} from "../src/cluster/index.js";
import { silentLogger } from "../src/core/index.js";
import {
  FailoverRecordSchema,
  MigrationRecordSchema,
  Untold,
} from "../src/gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
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
    if (placed !== SOURCE && h.sim.locate(vmId)?.state === "running") {
      // And its record finished (written just after the restart ran).
      await eventually(async () => {
        const state = (await restartRecord(h.store, vmId)).migration?.state;
        assert.ok(state === MigrationState.SUCCEEDED, `restart record ${state}`);
      });
      return;
    }
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

/** A hearing of the trail that takes every decision into `told`. */
const into =
  (told: FailoverDecision[]) =>
  (d: FailoverDecision): void => {
    told.push(d);
  };

const restartsOf = (told: FailoverDecision[], vmId: string) =>
  told.filter((d) => d.vmId === vmId && d.action === "restarted");

/** `real`, but refusing the first transaction `matches` picks (the store failing just then). */
function refusingOnce(real: KvStore, matches: (req: Parameters<KvStore["txn"]>[0]) => boolean) {
  let refused = 0;
  const store = new Proxy(real, {
    get(target, key) {
      if (key === "txn")
        return (req: Parameters<KvStore["txn"]>[0], o: Parameters<KvStore["txn"]>[1]) => {
          if (refused === 0 && matches(req)) {
            refused++;
            return Promise.reject(new Error("the store refused the write"));
          }
          return target.txn(req, o);
        };
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { store, refused: () => refused };
}

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
      onRestartUntold: into(told),
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
      assert.equal(h.decisions.filter((d) => d.vmId === vmId && d.action === "failed").length, 0);
    } finally {
      await h.close();
    }
  });

  it("a restart whose controller died before its trail took it is left by a daemon without a trail, and told by one with", async () => {
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
      onRestartUntold: () => hung,
    });
    const peers: ClusterHarness[] = [];
    try {
      const vmId = await haVm(h);
      await failOver(h, vmId);
      assert.equal((await restartRecord(store, vmId)).untold, Untold.FAILOVER);
      // The controller's process goes (its runner key with it) before telling it.
      await h.runtime.close();

      // A daemon with no audit trail does not take it: it would clear the mark untold.
      const untrailed = await startClusterHarness({ store, sim: h.sim, clock: h.clock });
      peers.push(untrailed);
      for (let i = 0; i < 4; i++) await untrailed.runtime.engine.reconcile();
      assert.equal((await restartRecord(store, vmId)).untold, Untold.FAILOVER, "left marked");

      const told: FailoverDecision[] = [];
      const trailed = await startClusterHarness({
        store,
        sim: h.sim,
        clock: h.clock,
        failover: true,
        onRestartUntold: into(told),
      });
      peers.push(trailed);
      await eventually(
        async () => {
          await trailed.runtime.engine.reconcile();
          assert.equal(restartsOf(told, vmId).length, 1);
        },
        { timeoutMs: 20_000 },
      );
      await eventually(async () =>
        assert.equal((await restartRecord(store, vmId)).untold, Untold.UNSPECIFIED),
      );
    } finally {
      for (const p of peers) await p.close();
      await h.close();
      await store.close();
    }
  });

  it("a restart whose controller's trail hangs for good, the controller alive, is handed to another daemon", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-restart-handoff-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const hung = new Promise<void>(() => {});
    let asked = 0;
    const h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      failover: true,
      store,
      auditTellTimeoutMs: 200,
      onDecision: (d) => (d.action === "restarted" ? hung : undefined),
      onRestartUntold: () => {
        asked++;
        return hung;
      },
    });
    let peer: ClusterHarness | undefined;
    try {
      const vmId = await haVm(h);
      await failOver(h, vmId);
      const told: FailoverDecision[] = [];
      peer = await startClusterHarness({
        store,
        sim: h.sim,
        clock: h.clock,
        failover: true,
        onRestartUntold: into(told),
      });
      const other = peer;
      await eventually(
        async () => {
          await h.runtime.engine.reconcile();
          await other.runtime.engine.reconcile();
          assert.equal(restartsOf(told, vmId).length, 1, `told by the other (asked here ${asked})`);
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      assert.ok(asked >= 2, "its own daemon tried again before handing it off");
      await eventually(async () =>
        assert.equal((await restartRecord(store, vmId)).untold, Untold.UNSPECIFIED),
      );
    } finally {
      await peer?.close();
      await h.close();
      await store.close();
    }
  });

  it("a restart whose record's last write failed, the vm running, is told as restarted and counted, not as failed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-restart-final-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    // The store refuses the first write of a failover record finished SUCCEEDED (etcd
    // restarting just then): the restart ran; its record could not say so.
    const { store, refused } = refusingOnce(real, (req) =>
      req.success.some((op) => {
        if (op.type !== "put" || !op.key.startsWith("migrations/")) return false;
        const m = fromBinary(MigrationRecordSchema, op.value).migration;
        return m?.kind === MigrationKind.FAILOVER && m.state === MigrationState.SUCCEEDED;
      }),
    );
    const told: FailoverDecision[] = [];
    const settled: string[] = [];
    const h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      failover: true,
      store,
      onDecision: into(told),
      onRestartUntold: into(told),
      onSettled: (m) => {
        settled.push(`${m.vm?.vmId} ${MigrationState[m.state]}`);
      },
    });
    try {
      const vmId = await haVm(h);
      h.sim.faults.partitionNode(SOURCE);
      for (
        let t = 0;
        t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 10_000 && refused() === 0;
        t += 1000
      ) {
        h.clock.advance(1000);
        await h.beat();
        await h.runtime.controller?.tick();
      }
      assert.equal(refused(), 1, "the restart's final write was refused");
      const target = h.sim.locate(vmId);
      assert.ok(target !== undefined && target.nodeId !== SOURCE && target.state === "running");
      await eventually(() =>
        assert.deepEqual(
          told.filter((d) => d.vmId === vmId).map((d) => d.action),
          ["restarted"],
          JSON.stringify(told),
        ),
      );
      assert.equal(
        h.decisions.filter((d) => d.vmId === vmId && d.action === "failed").length,
        0,
        "not told as failed",
      );
      // The record is settled by a reconcile pass: SUCCEEDED, as the vm runs there.
      await eventually(
        async () => {
          await h.runtime.engine.reconcile();
          const rec = await restartRecord(real, vmId);
          assert.equal(rec.migration?.state, MigrationState.SUCCEEDED);
          assert.equal(rec.untold, Untold.UNSPECIFIED);
        },
        { timeoutMs: 20_000 },
      );
      // Its settle is audited too, and agrees: it succeeded.
      assert.deepEqual(
        settled.filter((m) => m.startsWith(`${vmId} `)),
        [`${vmId} SUCCEEDED`],
      );
      assert.equal((await readPlacement(real, vmId)).rec?.nodeId, target.nodeId);
      const counted = await real.get(`failover/${vmId}`);
      assert.ok(counted, "the restart counted against the vm's restart limit");
      assert.equal(fromBinary(FailoverRecordSchema, counted.value).restarts, 1);
    } finally {
      await h.close();
      await real.close();
    }
  });

  it("a restart whose count could not be written is told as restarted, not as failed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-restart-count-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    let vmId = "";
    let sim: ClusterHarness["sim"] | undefined;
    // The store refuses the first write of the VM's failover record once it runs elsewhere:
    // the restart's count, written after the restart.
    const { store, refused } = refusingOnce(real, (req) => {
      const place = sim?.locate(vmId);
      const counting = req.success.some((op) => op.key === `failover/${vmId}`);
      return counting && place !== undefined && place.nodeId !== SOURCE;
    });
    const told: FailoverDecision[] = [];
    const h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      failover: true,
      store,
      onDecision: into(told),
      onRestartUntold: into(told),
    });
    sim = h.sim;
    try {
      vmId = await haVm(h);
      await failOver(h, vmId);
      await eventually(() => assert.equal(refused(), 1, "the count's write was refused"));
      const mine = told.filter((d) => d.vmId === vmId).map((d) => d.action);
      assert.deepEqual(mine, ["restarted"], JSON.stringify(told));
      await eventually(async () =>
        assert.equal((await restartRecord(real, vmId)).untold, Untold.UNSPECIFIED),
      );
    } finally {
      await h.close();
      await real.close();
    }
  });
});
