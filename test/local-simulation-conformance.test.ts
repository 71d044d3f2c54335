import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalSimulation } from "../src/drivers/index.js";
import { runHypervisorConformance } from "./helpers/hypervisor-conformance.js";

// The simulated hypervisor a dev agent runs (one node, its own directory, the
// cluster's shared storage) passes the same suite as the libvirt driver.
runHypervisorConformance("local simulation of one node (a dev agent's)", async () => {
  const root = mkdtempSync(join(tmpdir(), "dv-localsim-"));
  const open = (nodeId: string, vms: number) =>
    createLocalSimulation({
      nodeId,
      dir: join(root, nodeId),
      vms,
      now: Date.UTC(2026, 10, 22),
      sharedDir: join(root, "shared-storage"),
      migrationMs: 200,
    });
  const here = open("node-01", 2);
  const there = open("node-02", 0);
  const signal = () => new AbortController().signal;
  const [running, other] = await here.driver.list(signal());
  if (running === undefined || other === undefined) throw new Error("no generated domains");
  await here.driver.start(running.id, signal());
  await here.driver.stop(other.id, { force: true, signal: signal() });
  return {
    driver: here.driver,
    runningVmId: running.id,
    stoppedVmId: other.id,
    destination: { nodeId: "node-02", uri: there.migrationUri },
    destinationVmIds: async () => (await there.driver.list(signal())).map((d) => d.id),
    close: async () => {
      here.close();
      there.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
});
