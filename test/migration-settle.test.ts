import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { createMigrationRecords } from "../src/cluster/index.js";
import { toRpcError } from "../src/core/index.js";
import { MigrationPhase, MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type ClusterHarness, pickVm, startClusterHarness } from "./helpers/cluster-harness.js";

const onRbd = (vm: VmInfo) => vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

describe("settling an orphaned migration from the truth", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("V3: a paused runner's migration is not settled while the hypervisor job runs; once it completes the record says SUCCEEDED", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, migrationMs: 2500 });
    const { vm, source, target, orphan } = await orphanedMigration(h, "preparing");
    const driver = h.sim.driver(source);
    assert.ok(driver);
    const hvJob = driver.migrate(
      vm.id,
      { nodeId: target, uri: "" },
      { live: true, signal: AbortSignal.timeout(30_000) },
    );

    // The other daemon reconciles while the job runs: nothing is settled.
    await h.runtime.engine.reconcile();
    const during = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(during.state, MigrationState.RUNNING, during.message);
    assert.equal(h.sim.locate(vm.id)?.nodeId, source, "the job is still running");

    await hvJob;
    assert.equal(h.sim.locate(vm.id)?.nodeId, target);
    await h.runtime.engine.reconcile();
    const after = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(after.state, MigrationState.SUCCEEDED, after.message);
    // The lock is released: the vm can move again.
    const plan = await h.runtime.engine.plan(
      { vmId: vm.id, tenant: undefined, allowDowntime: false, target: source },
      AbortSignal.timeout(5000),
    );
    assert.ok(
      plan.checks.find((c) => c.name === "no_migration_in_flight")?.passed,
      "lock released",
    );
  });

  it("a paused runner's migration whose hypervisor job hangs is aborted by the successor after the bound: FAILED/ROLLED_BACK, the vm runs only on its source, no lock or reservation left", async () => {
    const boundMs = 60_000;
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      migrationMs: 2500,
      settleJobTimeoutMs: boundMs,
    });
    const { vm, source, target, orphan } = await orphanedMigration(h, "transferring");
    const records = createMigrationRecords(h.store);
    assert.ok((await records.reserved()).byNode.has(target), "the orphan holds room on the target");

    // The job the stalled runner started hangs at 50 % (a hypervisor that stopped progressing).
    h.sim.faults.holdMigration(vm.id, 50);
    const driver = h.sim.driver(source);
    assert.ok(driver);
    let reached!: () => void;
    const held = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const hvJob = driver
      .migrate(
        vm.id,
        { nodeId: target, uri: "" },
        {
          live: true,
          signal: AbortSignal.timeout(30_000),
          onProgress: (p) => {
            if (p.percent >= 50) reached();
          },
        },
      )
      .then(
        () => "completed",
        (err: unknown) => toRpcError(err).reason,
      );
    await held;

    // Within the bound the successor waits: nothing is decided, nothing released.
    assert.equal(await h.runtime.engine.reconcile(), 0);
    h.clock.advance(boundMs - 1000);
    assert.equal(await h.runtime.engine.reconcile(), 0);
    const during = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(during.state, MigrationState.RUNNING, during.message);
    assert.equal(await records.locked(vm.id), true);
    assert.equal((await driver.info(vm.id, AbortSignal.timeout(5000)))?.migrating, true);

    // Past it, the successor aborts the job, and only then settles.
    h.clock.advance(2000);
    assert.equal(await h.runtime.engine.reconcile(), 1);
    assert.equal(await hvJob, "CANCELLED", "the hypervisor job was aborted");
    const after = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(after.state, MigrationState.FAILED, after.message);
    assert.equal(after.phase, MigrationPhase.ROLLED_BACK, after.message);
    assert.match(after.message, new RegExp(`rolled back, the vm stays on ${source}`));
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
    assert.equal(await h.sim.driver(target)?.info(vm.id, AbortSignal.timeout(5000)), undefined);
    assert.equal(await records.locked(vm.id), false, "lock released");
    assert.equal((await records.reserved()).byNode.has(target), false, "reservation released");
    assert.deepEqual(h.sim.violations(), []);
  });
});

/**
 * A runner that started a live migration and then stalled: its record
 * names it, its runner key is gone (lease lost while paused), and the job
 * it started on the hypervisor (the caller's) goes on without it.
 */
async function orphanedMigration(h: ClusterHarness, phase: "preparing" | "transferring") {
  const vm = await pickVm(
    h.inventory,
    (v) =>
      onRbd(v) && v.liveMigratable && v.cpuModel === "host-model" && v.state === VmState.RUNNING,
  );
  const source = vm.nodeId?.id ?? "";
  const target = source === "node-02" ? "node-03" : "node-02";
  const { journal } = h.runtime.failover;
  const orphan = {
    ...journal.newJob({
      vm,
      source,
      target,
      live: true,
      allowDowntime: false,
      kind: "migrate",
      requestedBy: "operator",
    }),
    runner: "runner-paused",
    status: { state: "running", phase },
  } as const;
  assert.ok(await journal.begin(orphan, 0, AbortSignal.timeout(5000)));
  // Written as the stalled process did: not this one's to run.
  journal.disown(orphan.id);
  return { vm, source, target, orphan };
}
