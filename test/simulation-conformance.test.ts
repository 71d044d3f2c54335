import { createManualClock } from "../src/core/index.js";
import { createSimulation } from "../src/drivers/index.js";
import { runHypervisorConformance } from "./helpers/hypervisor-conformance.js";

// The simulated hypervisor must behave like the real ones where their abilities
// overlap: the same suite the libvirt driver passes against real virsh.
runHypervisorConformance("simulation", async () => {
  const sim = createSimulation({
    nodes: 2,
    vmsPerNode: 2,
    clock: createManualClock(Date.UTC(2026, 10, 22)),
    migrationMs: 200,
  });
  const driver = sim.driver("node-01");
  const stopped = "vm-002";
  await driver?.stop(stopped, { force: true, signal: new AbortController().signal });
  if (driver === undefined) throw new Error("no simulated node-01");
  return {
    driver,
    runningVmId: "vm-001",
    stoppedVmId: stopped,
    destination: { nodeId: "node-02", uri: "" },
    destinationVmIds: async () =>
      (await sim.driver("node-02")?.list(new AbortController().signal))?.map((d) => d.id) ?? [],
    close: async () => sim.close(),
  };
});
