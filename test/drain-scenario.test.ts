import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { drainNode } from "../src/cluster/index.js";
import type { DrainProgress } from "../src/gen/debvisor/v1/node_pb.js";
import {
  type ClusterHarness,
  replicatedTo,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

describe("draining a node of a 50-node, 1,000-vm simulated cluster", () => {
  let h: ClusterHarness;
  before(async () => {
    const nodes = Array.from({ length: 50 }, (_, i) => `node-${String(i + 1).padStart(2, "0")}`);
    h = await startClusterHarness({
      nodes: 50,
      vmsPerNode: 20,
      migrationMs: 60,
      replicas: replicatedTo(nodes),
    });
  });
  after(() => h.close());

  it("cordons the node and moves all of its 20 vms, at most 4 at a time, reporting progress", async () => {
    assert.equal((await h.inventory.listVms()).length, 1000);
    const onNode = (await h.inventory.getNode("node-07"))?.vms.map((vm) => vm.id) ?? [];
    assert.equal(onNode.length, 20);
    const events: DrainProgress[] = [];
    for await (const e of drainNode(
      { inventory: h.inventory, engine: h.runtime.engine },
      { nodeId: "node-07", maxParallel: 4, allowDowntime: true, requestedBy: "operator" },
      AbortSignal.timeout(60_000),
    ))
      events.push(e);
    const last = events.at(-1);
    assert.ok(last?.done);
    assert.equal(last?.total, 20);
    assert.equal(last?.succeeded, 20, last?.message);
    assert.equal(last?.failed, 0);
    // Counted at the hypervisors, not by the drain itself.
    const most = h.maxConcurrentMigrations();
    assert.ok(most <= 4, `at most 4 migrations at once, saw ${most}`);
    assert.ok(most > 1, "migrations ran in parallel");
    assert.ok(Math.max(...events.map((e) => e.inFlight)) <= 4, "progress reports the same limit");
    const counts = events.map((e) => e.succeeded);
    assert.deepEqual(
      [...counts].sort((a, b) => a - b),
      counts,
      "progress only goes forward",
    );

    const node = await h.inventory.getNode("node-07");
    assert.ok(node?.summary.cordoned);
    assert.equal(node?.vms.length, 0);
    for (const id of onNode) {
      const where = h.sim.locate(id);
      assert.notEqual(where?.nodeId, "node-07");
      assert.equal(where?.state, "running", `${id} runs after the move`);
    }
    // Counted per node, not through listVms (which shows each id once): no vm lost or doubled.
    let total = 0;
    for (const n of await h.inventory.listNodes()) total += n.health?.vms.length ?? 0;
    assert.equal(total, 1000, "no vm lost or doubled");
    // Spread over several nodes, not piled on one.
    const targets = new Set(onNode.map((id) => h.sim.locate(id)?.nodeId));
    assert.ok(targets.size >= 3, `spread over ${targets.size} nodes`);
    assert.deepEqual(h.sim.violations(), []);
  });

  it("drains 16 at a time without losing vms to reservation races", async () => {
    const events: DrainProgress[] = [];
    for await (const e of drainNode(
      { inventory: h.inventory, engine: h.runtime.engine },
      { nodeId: "node-20", maxParallel: 16, allowDowntime: true, requestedBy: "operator" },
      AbortSignal.timeout(60_000),
    ))
      events.push(e);
    const last = events.at(-1);
    assert.equal(last?.succeeded, 20, last?.message);
    assert.equal(last?.failed, 0);
    assert.equal((await h.inventory.getNode("node-20"))?.vms.length, 0);
    let total = 0;
    for (const n of await h.inventory.listNodes()) total += n.health?.vms.length ?? 0;
    assert.equal(total, 1000, "every vm reported by exactly one node");
    assert.deepEqual(h.sim.violations(), []);
  });

  it("a cordoned node receives no vms", async () => {
    const vm = (await h.inventory.getNode("node-08"))?.vms[0];
    assert.ok(vm);
    const plan = await h.runtime.engine.plan({
      vmId: vm.id,
      target: "node-07",
      allowDowntime: true,
      tenant: undefined,
    });
    assert.equal(plan.allowed, false);
    assert.match(plan.checks.find((c) => !c.passed)?.reason ?? "", /node-07 is cordoned/);
    await h.inventory.cordon("node-07", false);
    const again = await h.runtime.engine.plan({
      vmId: vm.id,
      target: "node-07",
      allowDowntime: true,
      tenant: undefined,
    });
    assert.ok(again.allowed, again.checks.find((c) => !c.passed)?.reason);
  });
});
