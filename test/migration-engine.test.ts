import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createMigrationRecords } from "../src/cluster/index.js";
import type { RpcError } from "../src/core/index.js";
import {
  MigrationKind,
  MigrationPhase,
  MigrationState,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type ClusterHarness, pickVm, startClusterHarness } from "./helpers/cluster-harness.js";

const rbdOnly = (vm: VmInfo) => vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);
const movable = (vm: VmInfo) =>
  rbdOnly(vm) && vm.liveMigratable && vm.cpuModel === "host-model" && vm.state === VmState.RUNNING;

function request(vm: VmInfo, extra: { target?: string; allowDowntime?: boolean } = {}) {
  return {
    vmId: vm.id,
    target: extra.target,
    allowDowntime: extra.allowDowntime ?? false,
    kind: MigrationKind.MIGRATE,
    requestedBy: "test-operator",
    tenant: undefined,
  };
}

describe("migrations on the simulated cluster", () => {
  let h: ClusterHarness;
  before(async () => {
    h = await startClusterHarness({ nodes: 4, vmsPerNode: 8, migrationMs: 400 });
  });
  after(() => h.close());

  it("a migration watched to completion moves the vm live, with phases and progress in order", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    const started = await h.runtime.engine.start(request(vm));
    assert.equal(started.source?.nodeId?.id, source);
    const target = started.target?.nodeId?.id ?? "";
    assert.notEqual(target, source);
    const seen = [];
    for await (const m of h.runtime.engine.watch(
      started.migrationId,
      undefined,
      AbortSignal.timeout(10_000),
    ))
      seen.push(m);
    const last = seen.at(-1);
    assert.equal(last?.state, MigrationState.SUCCEEDED);
    assert.equal(last?.phase, MigrationPhase.COMPLETED);
    assert.equal(last?.progressPct, 100);
    assert.ok(last?.live);
    const phases = seen.map((m) => m.phase);
    assert.ok(phases.includes(MigrationPhase.TRANSFERRING), "transfer progress was streamed");
    const pcts = seen.map((m) => m.progressPct);
    assert.deepEqual(
      [...pcts].sort((a, b) => a - b),
      pcts,
      "percent never goes back",
    );
    assert.ok(seen.some((m) => m.bytesTransferred > 0n && m.bytesTotal > 0n));
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: target, state: "running" });
    const inInventory = await h.inventory.findVm(vm.id);
    assert.equal(inInventory?.nodeId?.id, target);
    const listed = (await h.inventory.listVms()).filter((v) => v.id === vm.id);
    assert.equal(listed.length, 1, "listed once, on its new node");
  });

  it("a second migration of a vm in flight is refused, and the first still completes", async () => {
    const vm = await pickVm(h.inventory, movable);
    const first = await h.runtime.engine.start(request(vm));
    await assert.rejects(h.runtime.engine.start(request(vm)), (err: RpcError) => {
      assert.equal(err.reason, "MIGRATION_IN_PROGRESS");
      return true;
    });
    const done = await h.runtime.engine.wait(first.migrationId, AbortSignal.timeout(10_000));
    assert.equal(done.state, MigrationState.SUCCEEDED);
  });

  it("cancelling midway leaves the vm running on its source and frees its lock and reservation", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    const started = await h.runtime.engine.start(request(vm));
    for await (const m of h.runtime.engine.watch(
      started.migrationId,
      undefined,
      AbortSignal.timeout(10_000),
    ))
      if (m.phase === MigrationPhase.TRANSFERRING) break;
    const cancelled = await h.runtime.engine.cancel(started.migrationId, undefined);
    assert.equal(cancelled.state, MigrationState.CANCELLED);
    assert.equal(cancelled.phase, MigrationPhase.ROLLED_BACK);
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
    await assert.rejects(
      h.runtime.engine.cancel(started.migrationId, undefined),
      /already finished/,
    );
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      allowDowntime: false,
      tenant: undefined,
    });
    assert.ok(plan.allowed, "the lock is released: the vm can be planned again");
    const again = await h.runtime.engine.start(request(vm));
    assert.equal(
      (await h.runtime.engine.wait(again.migrationId, AbortSignal.timeout(10_000))).state,
      MigrationState.SUCCEEDED,
    );
  });

  it("a backend failure midway rolls back: the vm stays where it ran, the record says why", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    h.sim.faults.failMigration(vm.id, 50);
    const started = await h.runtime.engine.start(request(vm));
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(10_000));
    assert.equal(done.state, MigrationState.FAILED);
    assert.equal(done.phase, MigrationPhase.ROLLED_BACK);
    assert.match(done.message, /stays on/);
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
    assert.equal((await h.inventory.findVm(vm.id))?.nodeId?.id, source);
  });

  it("a vm that cannot move live is refused unless downtime is allowed, and then moves stopped and restarts", async () => {
    const vm = await pickVm(
      h.inventory,
      (v) => rbdOnly(v) && !v.liveMigratable && v.cpuModel !== "host-passthrough",
    );
    await assert.rejects(h.runtime.engine.start(request(vm)), (err: RpcError) => {
      assert.equal(err.reason, "NO_TARGET");
      assert.match(err.message, /allow_downtime/);
      return true;
    });
    const started = await h.runtime.engine.start(request(vm, { allowDowntime: true }));
    assert.equal(started.live, false);
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(10_000));
    assert.equal(done.state, MigrationState.SUCCEEDED, done.message);
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: done.target?.nodeId?.id, state: "running" });
  });

  it("cancelling an offline move midway starts the vm again on its source", async () => {
    const vm = await pickVm(
      h.inventory,
      (v) =>
        rbdOnly(v) &&
        !v.liveMigratable &&
        v.cpuModel !== "host-passthrough" &&
        v.state === VmState.RUNNING,
    );
    const source = vm.nodeId?.id ?? "";
    const started = await h.runtime.engine.start(request(vm, { allowDowntime: true }));
    assert.equal(started.live, false);
    for await (const m of h.runtime.engine.watch(
      started.migrationId,
      undefined,
      AbortSignal.timeout(10_000),
    ))
      if (m.phase === MigrationPhase.TRANSFERRING) break;
    assert.equal(h.sim.locate(vm.id)?.state, "stopped", "stopped for the move");
    const cancelled = await h.runtime.engine.cancel(started.migrationId, undefined);
    assert.equal(cancelled.state, MigrationState.CANCELLED);
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
  });

  it("reservations of in-flight migrations count against the target's free memory", async () => {
    const [a, b] = (await h.inventory.listVms()).filter(movable);
    assert.ok(a !== undefined && b !== undefined);
    const target = (await h.inventory.listNodes()).find(
      (n) => n.info?.id?.id !== a.nodeId?.id && n.info?.id?.id !== b.nodeId?.id,
    );
    const targetId = target?.info?.id?.id ?? "";
    const before = await h.runtime.engine.plan({
      vmId: b.id,
      target: targetId,
      allowDowntime: false,
      tenant: undefined,
    });
    const memBefore = before.checks.find((c) => c.name === "target_memory")?.reason ?? "";
    const started = await h.runtime.engine.start(request(a, { target: targetId }));
    const during = await h.runtime.engine.plan({
      vmId: b.id,
      target: targetId,
      allowDowntime: false,
      tenant: undefined,
    });
    const memDuring = during.checks.find((c) => c.name === "target_memory")?.reason ?? "";
    const free = (s: string) => Number(/has ([\d.]+) GiB free/.exec(s)?.[1]);
    const gib = Number(a.memoryBytes) / 1024 ** 3;
    assert.ok(
      Math.abs(free(memBefore) - free(memDuring) - gib) < 0.11,
      `${memBefore} -> ${memDuring}`,
    );
    await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(10_000));
  });

  it("plans for a tenant-confined caller, and for failovers, without the free figures other tenants' VMs leave", async () => {
    const vm = await h.inventory.assignTenant(
      (await pickVm(h.inventory, movable)).id,
      "acme",
      "test-operator",
    );
    const target = (await h.inventory.listNodes()).find((n) => n.info?.id?.id !== vm.nodeId?.id);
    const targetId = target?.info?.id?.id ?? "";
    const plan = (tenant: string | undefined, failover = false) =>
      h.runtime.engine.plan(
        { vmId: vm.id, target: targetId, allowDowntime: false, tenant },
        undefined,
        { failover },
      );
    const memory = async (p: ReturnType<typeof plan>) =>
      (await p).checks.find((c) => c.name === "target_memory")?.reason ?? "";
    assert.match(await memory(plan(undefined)), /has [\d.]+ GiB free after reservations/);
    for (const [name, reason] of [
      ["confined", await memory(plan(vm.tenant))],
      ["failover", await memory(plan(undefined, true))],
    ] as const) {
      assert.equal(reason, `${targetId} has enough free memory for the vm`, name);
    }
  });

  it("settles a migration whose runner died after the switchover as succeeded", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      allowDowntime: false,
      tenant: undefined,
    });
    assert.ok(plan.allowed);
    // The hypervisors finished the move while no control plane was watching.
    await h.sim
      .driver(source)
      ?.migrate(
        vm.id,
        { nodeId: plan.target, uri: "" },
        { live: true, signal: AbortSignal.timeout(5000) },
      );
    const { id, records } = await orphan(h, vm, plan, { live: true, restartAfter: false });
    assert.equal(await h.runtime.engine.reconcile(), 1);
    const m = await h.runtime.engine.get(id, undefined);
    assert.equal(m.state, MigrationState.SUCCEEDED);
    assert.match(m.message, /finished while the control plane was down/);
    assert.equal((await h.inventory.findVm(vm.id))?.nodeId?.id, plan.target);
    assert.equal(await records.locked(vm.id), false);
    assert.equal(await h.runtime.engine.reconcile(), 0, "settled once");
  });

  it("settling an offline move cut short starts the vm again on its source", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      allowDowntime: true,
      tenant: undefined,
    });
    // The dead runner had stopped the vm for an offline move, then died.
    await h.sim.driver(source)?.stop(vm.id, { force: false, signal: AbortSignal.timeout(1000) });
    const { id } = await orphan(h, vm, plan, { live: false, restartAfter: true });
    assert.equal(await h.runtime.engine.reconcile(), 1);
    const m = await h.runtime.engine.get(id, undefined);
    assert.equal(m.state, MigrationState.FAILED);
    assert.equal(m.phase, MigrationPhase.ROLLED_BACK);
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
  });

  it("settling when the source node is gone too releases the vm for failover", async () => {
    const vm = await pickVm(h.inventory, movable);
    const source = vm.nodeId?.id ?? "";
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      allowDowntime: false,
      tenant: undefined,
    });
    const { id, records } = await orphan(h, vm, plan, { live: true, restartAfter: false });
    h.sim.faults.killNode(source);
    try {
      assert.equal(await h.runtime.engine.reconcile(), 1);
      const m = await h.runtime.engine.get(id, undefined);
      assert.equal(m.state, MigrationState.FAILED);
      assert.match(m.message, /unreachable; the vm never reached/);
      assert.equal(await records.locked(vm.id), false, "failover may take the vm");
    } finally {
      h.sim.faults.healNode(source);
    }
  });

  it("lists migrations newest first and hides other tenants' migrations", async () => {
    const all = await h.runtime.engine.list(undefined);
    assert.ok(all.length >= 5);
    const ids = all.map((m) => m.migrationId);
    assert.deepEqual([...ids].sort().reverse(), ids);
    const tenantOfFirst = (await h.inventory.findVm(all[0]?.vm?.vmId ?? ""))?.tenant ?? "";
    const scoped = await h.runtime.engine.list("no-such-tenant");
    assert.equal(scoped.length, 0);
    await assert.rejects(
      h.runtime.engine.get(ids[0] ?? "", "no-such-tenant"),
      /migration not found/,
    );
    assert.ok((await h.runtime.engine.get(ids[0] ?? "", tenantOfFirst)).migrationId);
    assert.deepEqual(h.sim.violations(), []);
  });
});

/**
 * A migration record left by a runner that died ("r-gone"): stored with its
 * lock and reservation, as the dead process wrote it before it could run it.
 */
async function orphan(
  h: ClusterHarness,
  vm: VmInfo,
  plan: { target: string; revisions: ReadonlyMap<string, number> },
  opts: { live: boolean; restartAfter: boolean },
) {
  const records = createMigrationRecords(h.store);
  const { journal } = h.runtime.failover;
  const job = {
    ...journal.newJob({
      vm,
      source: vm.nodeId?.id ?? "",
      target: plan.target,
      live: opts.live,
      allowDowntime: !opts.live,
      kind: "migrate",
      requestedBy: "test-operator",
    }),
    runner: "r-gone",
    restartAfter: opts.restartAfter,
  };
  assert.ok(await journal.begin(job, plan.revisions.get(plan.target) ?? 0));
  // Written as the dead process would have: not this process's to run.
  journal.disown(job.id);
  return { id: job.id, records };
}
