import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createVmService, readPlacement } from "../src/cluster/index.js";
import { handlerCall, RpcError } from "../src/core/index.js";
import { VMRefSchema } from "../src/gen/debvisor/v1/migration_pb.js";
import {
  ListVmsRequestSchema,
  type VmInfo,
  type VmList,
  VmState,
} from "../src/gen/debvisor/v1/vm_pb.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  manageVm,
  onRbd,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

/**
 * An HA VM whose node died, whose failover's restart failed: the failover
 * had already placed it on its target (with a new generation), and nothing
 * moves it back. Every other node fails the restart for a while (the VM's
 * storage out), or the dead node comes back first: the VM must run again,
 * once, on one node, without an operator, and the API must say where it is
 * placed meanwhile.
 */

const SOURCE = "node-02";

/** A harness of `nodes` nodes whose recovers of the test's VM fail while `failing(node)` says so; the starts and restarts of it that took effect, as `node`. */
async function harnessFailing(nodes: number, failing: (node: string) => boolean) {
  let vmId = "";
  const ran: string[] = [];
  const asked: string[] = [];
  const h = await startClusterHarness({
    nodes,
    vmsPerNode: 4,
    failover: true,
    driver: (d) => ({
      ...d,
      async recover(id, from, signal, options) {
        if (id === vmId) {
          asked.push(d.nodeId);
          if (failing(d.nodeId))
            throw new RpcError("BACKEND_FAILED", { message: "rbd: cluster unavailable" });
        }
        await d.recover(id, from, signal, options);
        if (id === vmId) ran.push(d.nodeId);
      },
      async start(id, signal, options) {
        if (id === vmId && failing(d.nodeId))
          throw new RpcError("BACKEND_FAILED", { message: "rbd: cluster unavailable" });
        await d.start(id, signal, options);
        if (id === vmId) ran.push(d.nodeId);
      },
    }),
  });
  const vm = ((await h.inventory.getNode(SOURCE))?.vms ?? []).find(
    (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
  );
  assert.ok(vm, `an HA vm on RBD runs on ${SOURCE}`);
  await manageVm(h.store, vm, VmState.RUNNING);
  vmId = vm.id;
  const pass = async () => {
    h.clock.advance(1000);
    await h.beat();
    await h.runtime.controller?.tick();
  };
  /** Passes until `done` or `ms` of the harness's clock; the clock's ms it took. */
  const passUntil = async (ms: number, done: () => boolean | Promise<boolean>) => {
    let t = 0;
    for (; t < ms && !(await done()); t += 1000) await pass();
    return t;
  };
  return {
    h,
    vmId,
    ran,
    asked,
    pass,
    passUntil,
    /** Cuts the VM's node off until a failover placed the VM elsewhere and a pass more; the target. */
    async failedOver() {
      h.sim.faults.partitionNode(SOURCE);
      const down = HARNESS_TTL_MS + HARNESS_FENCE_MS;
      await passUntil(down + 5_000, async () => (await placedOn(h, vmId)) !== SOURCE);
      await pass();
      const target = await placedOn(h, vmId);
      assert.notEqual(target, SOURCE, "a failover began and placed it on its target");
      assert.deepEqual(ran, [], "its restart failed");
      return target;
    },
    /** Passes until the VM runs (within `ms`), then 20 s more: it ran once, never on two nodes. */
    async runsOnce(ms: number) {
      const took = await passUntil(ms, () => h.sim.locate(vmId)?.state === "running");
      assert.equal(h.sim.locate(vmId)?.state, "running", JSON.stringify(h.decisions));
      await passUntil(20_000, () => false);
      assert.equal(ran.length, 1, `started once: ${ran.join(" ")} (after ${took} ms)`);
      assert.deepEqual(h.sim.violations(), []);
      assert.equal(await placedOn(h, vmId), h.sim.locate(vmId)?.nodeId);
    },
  };
}

/** Where the VM's record places it. */
async function placedOn(h: ClusterHarness, vmId: string) {
  return (await readPlacement(h.store, vmId)).rec?.nodeId ?? "";
}

/** What the API shows of the VM (GetVm, and its entry in ListVms). */
async function shown(h: ClusterHarness, vmId: string) {
  const binding = createVmService({
    inventory: h.inventory,
    store: h.store,
    clock: h.clock,
    fenceDelayMs: HARNESS_FENCE_MS,
  });
  const got = await handlerCall<VmInfo>(binding, "GetVm")(create(VMRefSchema, { vmId }));
  const list = await handlerCall<VmList>(binding, "ListVms")(create(ListVmsRequestSchema, {}));
  return { got, listed: list.vms.find((v) => v.id === vmId) };
}

describe("an HA VM whose failover's restart failed", () => {
  for (const nodes of [2, 3]) {
    it(`${nodes} nodes, every other node failing the restart for 40 s: restarted once the failures end, exactly once`, async () => {
      let outage = true;
      const c = await harnessFailing(nodes, () => outage);
      const { h, vmId } = c;
      try {
        h.sim.faults.partitionNode(SOURCE);
        const down = HARNESS_TTL_MS + HARNESS_FENCE_MS;
        await c.passUntil(down + 40_000, () => false);
        assert.ok(c.asked.length >= nodes - 1, `a restart was tried: ${c.asked.join(" ")}`);
        assert.deepEqual(c.ran, [], "nothing ran it while every node failed");
        outage = false;
        // The longest a node is avoided after its failures so far (10 s doubled) is well
        // within two minutes; the VM comes back inside that, without an operator.
        await c.runsOnce(120_000);
        assert.notEqual(h.sim.locate(vmId)?.nodeId, SOURCE);
      } finally {
        await h.close();
      }
    });
  }

  it("its node back while it is placed on the failed target: it runs again there, exactly once", async () => {
    const c = await harnessFailing(3, (node) => node !== SOURCE);
    const { h } = c;
    try {
      await c.failedOver();
      h.sim.faults.healNode(SOURCE);
      await c.runsOnce(60_000);
      assert.deepEqual(c.ran, [SOURCE], "started on its node");
    } finally {
      await h.close();
    }
  });

  it("its node back as the other nodes' failures end: it runs again once, on one node", async () => {
    let outage = true;
    const c = await harnessFailing(3, (node) => node !== SOURCE && outage);
    const { h } = c;
    try {
      h.sim.faults.partitionNode(SOURCE);
      const down = HARNESS_TTL_MS + HARNESS_FENCE_MS;
      await c.passUntil(down + 25_000, () => false);
      assert.deepEqual(c.ran, [], "its restarts failed");
      outage = false;
      h.sim.faults.healNode(SOURCE);
      await c.runsOnce(60_000);
    } finally {
      await h.close();
    }
  });

  it("its node back while every node, its own too, fails to start it for 40 s: it runs again once the failures end", async () => {
    let outage = true;
    const c = await harnessFailing(3, () => outage);
    const { h } = c;
    try {
      await c.failedOver();
      h.sim.faults.healNode(SOURCE);
      await c.passUntil(35_000, () => false);
      assert.deepEqual(c.ran, [], "nothing ran it while every node failed");
      outage = false;
      // Counted against the limit (2 here), its node's failed starts left it down for the
      // limit's window (an hour) after the outage ended.
      await c.runsOnce(120_000);
    } finally {
      await h.close();
    }
  });

  it("is shown placed on the failed target, stopped, while nothing runs it", async () => {
    const c = await harnessFailing(3, (node) => node !== SOURCE);
    const { h, vmId } = c;
    try {
      const target = await c.failedOver();
      const { got, listed } = await shown(h, vmId);
      for (const vm of [got, listed]) {
        assert.equal(vm?.nodeId?.id, target, "shown where it is placed");
        assert.equal(vm?.state, VmState.STOPPED, "and not running there");
      }
    } finally {
      await h.close();
    }
  });
});
