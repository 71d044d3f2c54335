import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { createLocalSimulation, monotonicNs } from "../drivers/index.js";
import { HealthSchema } from "../gen/debvisor/v1/node_pb.js";
import { type AgentLinkHandlersDeps, createAgentLinkHandlers } from "./agent-link-handlers.js";
import type { NodeHypervisor } from "./node-hypervisor.js";
import { createSelfFence } from "./self-fence.js";

const MS = 1_000_000n;

describe("createAgentLinkHandlers", () => {
  it("a heartbeat's lease runs from when it is sent, not from before its inventory: a slow one does not keep HA starts waiting", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-link-handlers-"));
    const sim = createLocalSimulation({ nodeId: "node-x", dir, vms: 1, now: 0 });
    const clock = { ns: monotonicNs() };
    const fence = createSelfFence({
      driver: sim.driver,
      isHa: () => true,
      logger: silentLogger,
      now: () => clock.ns,
    });
    try {
      // Listing the domains takes 0.6 s of a 1 s window (a busy libvirt).
      const hv = {
        async inventory() {
          clock.ns += 600n * MS;
          return { health: create(HealthSchema, {}), datasets: [] };
        },
      } as unknown as NodeHypervisor;
      const handlers = createAgentLinkHandlers({ fence, hv } as unknown as AgentLinkHandlersDeps);
      fence.configure(1000);
      await handlers.heartbeat?.(1n);
      // Confirmed at once, as sent: the node holds its lease for the whole window from now.
      await fence.guard(() => fence.renewed(1n));
      await assert.doesNotReject(fence.leased(AbortSignal.timeout(200)), "an HA start goes ahead");
    } finally {
      fence.close();
      sim.close?.();
    }
  });
});
