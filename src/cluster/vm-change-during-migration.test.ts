import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  adminContext,
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  manageVm,
  onRbd,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import type { RpcError } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { failoverVm } from "./failover.js";
import { createVmLifecycle } from "./vm-lifecycle.js";

/**
 * One change of a VM at a time. The chaos test (seed 42) saw a start
 * accepted while a drain moved the stopped HA VM off its node: the start
 * went to the node the VM was leaving, failed there (VM_NOT_FOUND), and the
 * VM arrived stopped with its desired state RUNNING, which nothing acts on.
 * The other order ends the same way: a start waiting on its node's agent
 * when the migration begins.
 */
describe("a VM's lifecycle operations and its migrations", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  const ctx = adminContext();
  const migrate = (vmId: string, target = "node-02") =>
    h.runtime.engine.start({
      vmId,
      target,
      allowDowntime: true,
      kind: MigrationKind.MIGRATE,
      requestedBy: "test-operator",
      tenant: undefined,
    });

  /** A stopped VM of node-01, managed, desired STOPPED. */
  async function stoppedVm(migrationMs: number): Promise<VmInfo> {
    h = await startClusterHarness({ nodes: 2, vmsPerNode: 2, migrationMs });
    const vm = (await h.inventory.getNode("node-01"))?.vms[0];
    assert.ok(vm);
    await h.sim.driver("node-01")?.stop(vm.id, { force: true, signal: AbortSignal.timeout(5000) });
    await manageVm(h.store, vm, VmState.STOPPED);
    await h.beat();
    return vm;
  }
  const record = async (vmId: string) => getMessage(h.store, VmRecordSchema, `vms/${vmId}`);

  it("refuses a start while a migration of the VM is in flight, and writes nothing", async () => {
    const vm = await stoppedVm(3000);
    const lifecycle = createVmLifecycle({ inventory: h.inventory, store: h.store, clock: h.clock });
    const before = await record(vm.id);
    const started = await migrate(vm.id);
    await assert.rejects(
      lifecycle.startVm({ vmId: vm.id, requestId: "start-1" } as never, ctx),
      (err: RpcError) => err.reason === "MIGRATION_IN_PROGRESS",
    );
    const during = await record(vm.id);
    assert.equal(during?.modRevision, before?.modRevision, "the record is not written");
    assert.equal(during?.message.desiredState, VmState.STOPPED);

    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(15_000));
    assert.equal(done.state, MigrationState.SUCCEEDED, done.message);
    // Over: the start is taken, for the node the VM is on now.
    const op = await lifecycle.startVm({ vmId: vm.id, requestId: "start-2" } as never, ctx);
    assert.equal(op.nodeId?.id, "node-02");
    assert.equal((await record(vm.id))?.message.desiredState, VmState.RUNNING);
  });

  it("refuses a migration while a start waits on the VM's node, and takes it once the start has its outcome", async () => {
    const vm = await stoppedVm(300);
    const lifecycle = createVmLifecycle({ inventory: h.inventory, store: h.store, clock: h.clock });
    // Nothing runs operations in the harness: the start waits, as on a node whose agent is away.
    const op = await lifecycle.startVm({ vmId: vm.id, requestId: "start-1" } as never, ctx);
    await assert.rejects(migrate(vm.id), (err: RpcError) => {
      assert.equal(err.reason, "MIGRATION_IN_PROGRESS");
      assert.match(err.message, new RegExp(`operation ${op.id} on this vm has no outcome yet`));
      return true;
    });
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      allowDowntime: true,
      tenant: undefined,
    });
    assert.equal(plan.checks.find((c) => c.name === "no_operation_in_flight")?.passed, false);
    assert.equal(h.sim.locate(vm.id)?.nodeId, "node-01", "nothing moved");

    // The node answers the start: the migration is taken.
    const agentOps = createAgentOperations(h.store, h.clock);
    await agentOps.finish(
      "node-01",
      create(OperationResultSchema, { operationId: op.id, outcome: OperationOutcome.FAILED }),
    );
    const started = await migrate(vm.id);
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(15_000));
    assert.equal(done.state, MigrationState.SUCCEEDED, done.message);
  });

  it("does not let an operation left on a node the VM was failed over from hold up its migrations", async () => {
    // Found by review: a reboot waiting on node-01 when it died named the VM's last operation
    // for good, and every migration of the failed-over VM was refused.
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4 });
    const vm = (await h.inventory.getNode("node-01"))?.vms.find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm);
    await manageVm(h.store, vm, VmState.RUNNING);
    const lifecycle = createVmLifecycle({ inventory: h.inventory, store: h.store, clock: h.clock });
    const op = await lifecycle.rebootVm({ vmId: vm.id, requestId: "r-1" } as never, ctx);
    assert.equal(op.nodeId?.id, "node-01");
    h.sim.faults.partitionNode("node-01");
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 1500; t += 500) {
      h.clock.advance(500);
      await h.beat();
    }
    const failedOver = await failoverVm(
      h.runtime.failover,
      vm.id,
      "operator",
      undefined,
      AbortSignal.timeout(5000),
    );
    assert.equal(failedOver.state, MigrationState.SUCCEEDED, failedOver.message);
    const at = h.sim.locate(vm.id);
    assert.equal(at?.state, "running");
    const other = at?.nodeId === "node-02" ? "node-03" : "node-02";
    const started = await migrate(vm.id, other);
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(15_000));
    assert.equal(done.state, MigrationState.SUCCEEDED, done.message);
  });
});
