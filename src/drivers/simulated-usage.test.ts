import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { simulatedUsage, type UsingDomain } from "./simulated-usage.js";

const GIB = 1024n ** 3n;
const NODE = { cpuCores: 8, memoryBytes: 32n * GIB };
const vm = (state: UsingDomain["state"], vcpus: number, gib: bigint): UsingDomain => ({
  state,
  vcpus,
  memoryBytes: gib * GIB,
});

describe("simulatedUsage", () => {
  for (const [name, domains, cpuLoad, memUsedPct] of [
    ["ok-no-domains", [], 0, 0],
    ["ok-stopped-and-crashed-use-nothing", [vm("stopped", 4, 8n), vm("crashed", 2, 4n)], 0, 0],
    ["ok-running", [vm("running", 2, 8n), vm("stopped", 4, 8n)], 2, 25],
    ["ok-paused-keeps-its-memory-not-cpu", [vm("paused", 4, 4n)], 0, 12.5],
    ["ok-bounded-by-capacity", [vm("running", 6, 24n), vm("running", 6, 24n)], 8, 100],
  ] as const)
    it(name, () => assert.deepEqual(simulatedUsage(domains, NODE), { cpuLoad, memUsedPct }));

  it("reports nothing for a node without a capacity", () =>
    assert.deepEqual(simulatedUsage([vm("running", 2, 1n)], undefined), {
      cpuLoad: 0,
      memUsedPct: 0,
    }));
});
