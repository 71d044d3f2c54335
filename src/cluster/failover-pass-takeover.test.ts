import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  startClusterHarness,
  startPeerHarness,
} from "../../test/helpers/cluster-harness.js";
import { within } from "../../test/helpers/eventually.js";
import { heldRecovers, passUnderWay } from "../../test/helpers/held-passes.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

const DOWN = ["node-02", "node-03", "node-04"];

// From the review of the concurrent failover pass (3471ea4), an attack that held: a leader's
// pass has maxParallel restarts under way (their targets hold their answer) when its
// leadership goes (its lease runs out, or its controller is closed mid-pass) and another
// daemon's controller takes it and runs its own passes over the same lost VMs. Every
// decision is conditional on the election it was made under, and a VM's lock and placement
// generation keep the two apart: each HA VM still runs once, elsewhere, failed over once.
describe("a pass's restarts under way when another daemon takes the leadership", () => {
  let a: ClusterHarness | undefined;
  let b: ClusterHarness | undefined;
  let rel: (() => void) | undefined;
  afterEach(async () => {
    rel?.();
    await b?.close();
    await a?.close();
    a = b = undefined;
  });

  for (const how of ["lease lost", "closed"] as const) {
    it(`each HA vm restarted exactly once (${how})`, async () => {
      const h = heldRecovers(() => true);
      rel = h.releaseAll;
      a = await startClusterHarness({ nodes: 6, vmsPerNode: 6, failover: true, driver: h.wrap });
      b = await startPeerHarness(a, 6, 6);
      const ca = a.runtime.controller;
      const cb = b.runtime.controller;
      assert.ok(ca && cb);
      const ha: VmInfo[] = [];
      for (const n of DOWN)
        ha.push(...((await a.inventory.getNode(n))?.vms ?? []).filter((v) => v.ha && onRbd(v)));
      assert.ok(ha.length > 4, `${ha.length}`);
      await ca.tick();
      assert.ok(ca.isLeader());
      for (const n of DOWN) a.sim.faults.partitionNode(n);
      const passA = (
        await passUnderWay(
          a,
          () => h.started.length > 0,
          HARNESS_TTL_MS + HARNESS_FENCE_MS + 3000,
          3000,
        )
      )?.pass;
      assert.ok(passA, "a's pass started restarts");
      await within(3000, () => h.started.length >= 4);
      if (how === "closed") await ca.close();
      else await new Promise((r) => setTimeout(r, 3500)); // a's 2 s lease runs out (real time)
      // b takes over and runs passes while a's restarts are still under way.
      for (let i = 0; i < 6; i++) {
        a.clock.advance(500);
        await a.beat();
        await cb.tick();
      }
      assert.ok(cb.isLeader(), "b leads");
      h.releaseAll();
      await passA;
      for (let i = 0; i < 12; i++) {
        a.clock.advance(500);
        await a.beat();
        await cb.tick();
      }
      const failovers = (await a.runtime.engine.list(undefined)).filter(
        (m) => m.kind === MigrationKind.FAILOVER && m.state === MigrationState.SUCCEEDED,
      );
      const ids = failovers.map((m) => m.vm?.vmId ?? "").sort();
      for (const vm of ha) {
        const where = a.sim.locate(vm.id);
        assert.equal(where?.state, "running", `${vm.id} runs: ${JSON.stringify(where)}`);
        assert.ok(!DOWN.includes(where?.nodeId ?? ""), `${vm.id} elsewhere`);
      }
      assert.deepEqual(a.sim.violations(), []);
      assert.equal(new Set(ids).size, ids.length, `each once: ${ids.join(", ")}`);
    });
  }
});
