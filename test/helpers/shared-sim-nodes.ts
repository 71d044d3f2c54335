import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalSimulation, type LocalSimulationOptions } from "../../src/drivers/index.js";

/** Simulated nodes in a new directory `root`, sharing one simulated storage. */
export function sharedSimNodes(prefix = "dv-shared-") {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const shared = join(root, "shared-storage");
  return {
    root,
    open: (nodeId: string, vms: number, more: Partial<LocalSimulationOptions> = {}) =>
      createLocalSimulation({
        nodeId,
        dir: join(root, nodeId),
        vms,
        now: 0,
        sharedDir: shared,
        ...more,
      }),
  };
}
