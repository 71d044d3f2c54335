import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { within } from "../../test/helpers/eventually.js";
import { heldRecovers, passUnderWay } from "../../test/helpers/held-passes.js";
import type { RecoveringDriver } from "../drivers/index.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

/** The nodes taken down: three nodes' HA VMs on RBD, six in all, more than a pass runs at once. */
const DOWN = ["node-02", "node-03", "node-04"];
/** The controller's default bound on restarts at once (cluster.failover.maxParallel). */
const MAX_PARALLEL = 4;

/**
 * Takes DOWN's nodes off and advances the clock (heartbeating the others)
 * until a pass of the controller asks for a first recover; that pass is
 * returned still running (wrapped: an async function's result would wait for it).
 */
async function downUntilFirstRecover(h: ClusterHarness, started: readonly string[]) {
  for (const node of DOWN) h.sim.faults.partitionNode(node);
  const under = await passUnderWay(
    h,
    () => started.length > 0,
    HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000,
    5000,
  );
  if (under === undefined) assert.fail("no failover was started");
  return under;
}

/** Six nodes of six VMs each, the controller on, their drivers wrapped by `driver`. */
function sixNodes(driver?: (d: RecoveringDriver) => RecoveringDriver) {
  return startClusterHarness({ nodes: 6, vmsPerNode: 6, failover: true, driver });
}

async function haOnRbd(h: ClusterHarness): Promise<VmInfo[]> {
  const out: VmInfo[] = [];
  for (const node of DOWN)
    out.push(...((await h.inventory.getNode(node))?.vms ?? []).filter((v) => v.ha && onRbd(v)));
  return out;
}

describe("the failover controller's pass, over several lost HA VMs", () => {
  let h: ClusterHarness | undefined;
  let release: (() => void) | undefined;
  afterEach(async () => {
    release?.();
    await h?.close();
    h = undefined;
  });

  it("restarts the others while one VM's target has not answered yet (chaos seed 105: one slow failover held the whole pass)", async () => {
    let first: string | undefined;
    const recovers = heldRecovers((vmId) => {
      first ??= vmId;
      return vmId === first;
    });
    release = recovers.releaseAll;
    h = await sixNodes(recovers.wrap);
    const ha = await haOnRbd(h);
    assert.ok(ha.length > MAX_PARALLEL, `${ha.length} HA vms on RBD`);
    const held = (await downUntilFirstRecover(h, recovers.started)).pass;
    // The first target holds its answer (15 s in production, here until released): the
    // pass's other VMs are restarted meanwhile, well within that.
    const others = await within(5000, () => recovers.done.some((id) => id !== first));
    recovers.releaseAll();
    await held;
    assert.ok(others, `restarted while ${first} was held: ${recovers.done.join(", ") || "none"}`);
    assert.deepEqual(h.sim.violations(), []);
  });

  it("never has more than cluster.failover.maxParallel restarts under way at once, and restarts every VM once", async () => {
    const recovers = heldRecovers(() => true);
    release = recovers.releaseAll;
    h = await sixNodes(recovers.wrap);
    const controller = h.runtime.controller;
    assert.ok(controller);
    const ha = await haOnRbd(h);
    const held = (await downUntilFirstRecover(h, recovers.started)).pass;
    // Every target holds: as many as the bound are asked at once, and no more (looked at
    // for a while after the bound is reached).
    await within(5000, () => recovers.inFlight() >= MAX_PARALLEL);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(recovers.most(), MAX_PARALLEL, `recovers at once: ${recovers.started.join(", ")}`);
    recovers.releaseAll();
    await held;
    // The rest on this pass or the next ones, each exactly once.
    for (
      let i = 0;
      i < 6 && ha.some((vm) => DOWN.includes(h?.sim.locate(vm.id)?.nodeId ?? ""));
      i++
    ) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    }
    const failovers = (await h.runtime.engine.list(undefined)).filter(
      (m) => m.kind === MigrationKind.FAILOVER && m.state === MigrationState.SUCCEEDED,
    );
    assert.deepEqual(failovers.map((m) => m.vm?.vmId).sort(), ha.map((vm) => vm.id).sort());
    for (const vm of ha) assert.equal(h.sim.locate(vm.id)?.state, "running", vm.id);
    assert.ok(recovers.most() <= MAX_PARALLEL);
    assert.deepEqual(h.sim.violations(), []);
  });

  it("restarts them all in one pass: restarts racing for a node's record or a target's room look again, not refused as changed meanwhile", async () => {
    h = await sixNodes();
    const controller = h.runtime.controller;
    assert.ok(controller);
    const ha = await haOnRbd(h);
    const lost = () => ha.filter((vm) => DOWN.includes(h?.sim.locate(vm.id)?.nodeId ?? ""));
    for (const node of DOWN) h.sim.faults.partitionNode(node);
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000; t += 500) {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
      if (lost().length < ha.length) break;
    }
    assert.deepEqual(
      lost(),
      [],
      "every HA vm on RBD restarted by the first pass that restarted one",
    );
    assert.deepEqual(
      h.decisions.filter((d) => /changed while failing over/.test(d.detail)),
      [],
    );
    assert.deepEqual(h.sim.violations(), []);
  });
});
