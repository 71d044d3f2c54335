import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createLocalSimulation } from "./local-simulation.js";
import { sendHandoff } from "./sim-handoff.js";
import { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";

/**
 * A live migration's source moves the disks' locks and writes the handoff
 * into the destination's inbox in one step, but the file shows before the
 * locks' move commits. The chaos test (seed 105) saw the destination adopt
 * the running domain in that moment, find its locks still the source's, and
 * stop it as fenced: a VM migrated live ended stopped, and nothing started
 * it again.
 */
describe("a handoff seen before its disks' locks moved", () => {
  it("is adopted running once the locks are the destination's, not stopped as fenced", async () => {
    const root = mkdtempSync(join(tmpdir(), "dv-handoff-locks-"));
    const shared = join(root, "shared-storage");
    const sig = AbortSignal.timeout(20_000);
    const open = (nodeId: string, vms: number) =>
      createLocalSimulation({ nodeId, dir: join(root, nodeId), vms, now: 0, sharedDir: shared });
    const a = open("node-a", 1);
    const d = open("node-d", 0);
    const locks = openSimulatedDiskLocks(shared);
    try {
      const vm = (await a.driver.list(sig))[0];
      assert.equal(vm?.state, "running");
      const info = a.vmInfo(vm.id);
      assert.ok(info);
      const names = lockNamesOf(info);
      // The moment inside the source's step: the file written, the locks not moved yet.
      sendHandoff(join(root, "node-d"), { info, state: "running", from: "node-a" });
      assert.notEqual((await d.driver.info(vm.id, sig))?.state, "stopped", "not fenced meanwhile");
      locks.handOver(names, "node-a", "node-d", 0n, () => {});
      assert.equal((await d.driver.info(vm.id, sig))?.state, "running");
    } finally {
      locks.close();
      a.close();
      d.close();
    }
  });
});
