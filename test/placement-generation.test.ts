import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { createAgentOperations, currentGeneration, failoverVm } from "../src/cluster/index.js";
import type { RpcError } from "../src/core/index.js";
import { OperationKind } from "../src/gen/debvisor/v1/agent_pb.js";
import { MigrationKind, MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  pickVm,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

/** Advances the manual clock in steps, heartbeating the nodes that still can. */
async function pass(h: ClusterHarness, ms: number, step = 500) {
  for (let t = 0; t < ms; t += step) {
    h.clock.advance(step);
    await h.beat();
  }
}

describe("a placement generation per vm (the fencing token)", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("a migration's commit and a failover each bump it once, with the placement, and agent operations carry it", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, migrationMs: 200 });
    const vm = await pickVm(
      h.inventory,
      (v) =>
        onRbd(v) && v.liveMigratable && v.cpuModel === "host-model" && v.state === VmState.RUNNING,
    );
    const before = await currentGeneration(h.store, vm.id);
    const started = await h.runtime.engine.start({
      vmId: vm.id,
      allowDowntime: false,
      kind: MigrationKind.MIGRATE,
      requestedBy: "operator",
      tenant: undefined,
    });
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(10_000));
    assert.equal(done.state, MigrationState.SUCCEEDED);
    assert.equal(await currentGeneration(h.store, vm.id), before + 1n, "the commit bumped it");

    // A migration that fails changes nothing of the placement.
    const target = done.target?.nodeId?.id ?? "";
    h.sim.faults.failMigration(vm.id, 10);
    const failing = await h.runtime.engine.start({
      vmId: vm.id,
      allowDowntime: false,
      kind: MigrationKind.MIGRATE,
      requestedBy: "operator",
      tenant: undefined,
    });
    const failed = await h.runtime.engine.wait(failing.migrationId, AbortSignal.timeout(10_000));
    assert.equal(failed.state, MigrationState.FAILED);
    assert.equal(await currentGeneration(h.store, vm.id), before + 1n, "a rollback keeps it");
    assert.equal(h.sim.locate(vm.id)?.nodeId, target);

    // The node dies; the failover's record and the new generation are one txn.
    h.sim.faults.killNode(target);
    await pass(h, HARNESS_TTL_MS + HARNESS_FENCE_MS + 1000);
    const m = await failoverVm(
      h.runtime.failover,
      vm.id,
      "operator",
      undefined,
      AbortSignal.timeout(5000),
    );
    assert.equal(m.state, MigrationState.SUCCEEDED);
    assert.equal(await currentGeneration(h.store, vm.id), before + 2n, "the failover bumped it");

    // An operation on the vm carries its current generation.
    const ops = createAgentOperations(h.store, h.clock);
    const rec = await ops.submit(
      m.target?.nodeId?.id ?? "",
      {
        operationId: "op-start-1",
        kind: OperationKind.START_VM,
        vmId: vm.id,
        params: {},
        generation: 0n,
      },
      "operator",
    );
    assert.equal(rec.dispatch?.generation, before + 2n);
  });

  it("a controller that lost its election decides no failover, however sure it is", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, failover: true });
    const controller = h.runtime.controller;
    assert.ok(controller);
    await controller.tick();
    assert.ok(controller.isLeader());
    const ha = ((await h.inventory.getNode("node-02"))?.vms ?? []).filter(
      (vm) => vm.ha && onRbd(vm),
    );
    assert.ok(ha.length > 0);
    h.sim.faults.partitionNode("node-02");
    await pass(h, HARNESS_TTL_MS + HARNESS_FENCE_MS + 1000);
    // It stalled; meanwhile its election key went and another process was elected.
    // Its own lease still answers, so it still believes it leads.
    await h.store.delete("controllers/failover");
    await h.store.put("controllers/failover", new TextEncoder().encode("r-someone-else"));
    await controller.tick();
    const failovers = (await h.runtime.engine.list(undefined)).filter(
      (m) => m.kind === MigrationKind.FAILOVER && m.state !== MigrationState.FAILED,
    );
    assert.deepEqual(failovers, [], "nothing was restarted by the deposed leader");
    for (const vm of ha) assert.equal(h.sim.locate(vm.id)?.nodeId, "node-02");
    const mine = h.decisions.filter((d) => ha.some((vm) => vm.id === d.vmId));
    assert.ok(mine.length > 0 && mine.every((d) => d.action === "failed"), JSON.stringify(mine));
    assert.deepEqual(h.sim.violations(), []);
  });

  it("a failover refused because the node is still within its fence delay writes no generation", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4 });
    const vm = (await h.inventory.getNode("node-01"))?.vms.find(onRbd);
    assert.ok(vm);
    const before = await currentGeneration(h.store, vm.id);
    h.sim.faults.partitionNode("node-01");
    await pass(h, HARNESS_TTL_MS + 1000);
    await assert.rejects(
      failoverVm(h.runtime.failover, vm.id, "operator", undefined, AbortSignal.timeout(5000)),
      (err: RpcError) => err.reason === "FAILOVER_NOT_ALLOWED",
    );
    assert.equal(await currentGeneration(h.store, vm.id), before);
  });
});
