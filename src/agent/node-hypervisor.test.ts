import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { agentConfigSchema } from "./agent-config.js";
import { openNodeHypervisor } from "./node-hypervisor.js";

/** An agent's simulated node with `vms` generated (running) domains in a directory of its own. */
function simulatedNode(vms: number) {
  const dir = mkdtempSync(join(tmpdir(), "dv-node-hv-"));
  const config = agentConfigSchema.parse({ dir, driver: { kind: "sim" }, sim: { vms } });
  return openNodeHypervisor(config, "node-x", silentLogger);
}

describe("openNodeHypervisor (sim)", () => {
  it("reports the memory its running VM has, and its vCPUs as load; none once it stops", async () => {
    const hv = simulatedNode(1);
    try {
      const signal = AbortSignal.timeout(5000);
      const capacity = hv.info.capacity;
      assert.ok(capacity !== undefined && capacity.memoryBytes > 0n);
      const { health } = await hv.inventory(signal);
      const [vm] = health.vms;
      assert.ok(vm !== undefined && vm.memoryBytes > 0n && vm.vcpus > 0);
      assert.ok(health.memUsedPct > 0, "the node shows memory in use");
      // What a listing shows as used memory (percent of capacity) is what the VM has.
      assert.equal(
        Math.round((health.memUsedPct / 100) * Number(capacity.memoryBytes)),
        Number(vm.memoryBytes),
      );
      assert.equal(health.cpuLoad, vm.vcpus);

      await hv.driver.stop(vm.id, { force: true, signal });
      const stopped = (await hv.inventory(signal)).health;
      assert.equal(stopped.vms.length, 1, "the stopped VM is still listed");
      assert.equal(stopped.memUsedPct, 0);
      assert.equal(stopped.cpuLoad, 0);
    } finally {
      hv.close();
    }
  });

  it("reports no use on a node without VMs", async () => {
    const hv = simulatedNode(0);
    try {
      const { health } = await hv.inventory(AbortSignal.timeout(5000));
      assert.deepEqual([health.vms.length, health.memUsedPct, health.cpuLoad], [0, 0, 0]);
    } finally {
      hv.close();
    }
  });
});
