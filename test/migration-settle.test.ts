import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type ClusterHarness, pickVm, startClusterHarness } from "./helpers/cluster-harness.js";

const onRbd = (vm: VmInfo) => vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

describe("settling an orphaned migration from the truth", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("V3: a paused runner's migration is not settled while the hypervisor job runs; once it completes the record says SUCCEEDED", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, migrationMs: 2500 });
    const vm = await pickVm(
      h.inventory,
      (v) =>
        onRbd(v) && v.liveMigratable && v.cpuModel === "host-model" && v.state === VmState.RUNNING,
    );
    const source = vm.nodeId?.id ?? "";
    const target = source === "node-02" ? "node-03" : "node-02";
    // A runner that started the migration and then stalled: its record names
    // it, its runner key is gone (lease lost while paused), and the job it
    // started on the hypervisor goes on without it.
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
      status: { state: "running", phase: "preparing" },
    } as const;
    assert.ok(await journal.begin(orphan, 0, AbortSignal.timeout(5000)));
    journal.disown(orphan.id);
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
});
