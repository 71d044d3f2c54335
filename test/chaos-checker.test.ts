import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../src/core/index.js";
import {
  type DomainState,
  openSimulatedDiskLocks,
  openSimulatedWatchdog,
  saveWorld,
} from "../src/drivers/index.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { VmInfoSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../src/store/index.js";
import { CHAOS_BOUNDS } from "./chaos/chaos-bounds.js";
import { createChecker } from "./chaos/chaos-checker.js";
import { createHistory } from "./chaos/chaos-history.js";
import { createObserver } from "./chaos/chaos-observer.js";

/**
 * The chaos checker held to the failures it is there to see, on the files
 * the simulated hypervisors really write (sim-world.json through saveWorld,
 * the shared disk locks' database): a checker that never reports cannot
 * pass these, so a clean chaos run means something.
 */
const NODES = ["node-a", "node-b"] as const;
const VM = "vm-1";

describe("chaos checker", () => {
  let root: string;
  let dirs: Map<string, string>;
  let store: KvStore;
  let agent: Record<string, "up" | "paused" | "dead">;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "dv-chaos-checker-"));
    dirs = new Map(NODES.map((n) => [n, join(root, n)]));
    for (const d of dirs.values()) mkdirSync(d);
    mkdirSync(join(root, "shared"));
    store = createSqliteStore({ path: join(root, "state.db"), logger: silentLogger });
    agent = { "node-a": "up", "node-b": "up" };
  });
  afterEach(async () => {
    await store.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** Node `node`'s hypervisor holds VM in `state` (or nothing), as its agent would write it. */
  function hypervisor(node: string, state: DomainState | undefined): void {
    const info = create(VmInfoSchema, { id: VM, name: VM, vcpus: 1, memoryBytes: 1n << 30n });
    saveWorld(
      {
        nodes: new Map(),
        vms: state === undefined ? new Map() : new Map([[VM, { info, node, state }]]),
        inflight: new Map(),
        violations: [],
      },
      join(dirs.get(node) as string, "sim-world.json"),
    );
  }

  function lockFor(node: string, generation: bigint): void {
    const locks = openSimulatedDiskLocks(join(root, "shared"));
    try {
      locks.acquire([`vm/${VM}`], node, generation, () => {});
    } finally {
      locks.close();
    }
  }

  function checker() {
    const history = createHistory(1);
    const observer = createObserver(dirs, join(root, "shared"));
    const c = createChecker({ observer, store, history, agent: (n) => agent[n] ?? "dead" });
    return { c, history, observer };
  }

  const twice = (h: ReturnType<typeof createHistory>) =>
    h.violations.filter((v) => v.property === "never twice");

  it("reports a vm running on two nodes at once when the copy without its disk lock has no running agent to stop it", () => {
    lockFor("node-a", 1n);
    hypervisor("node-a", "running");
    hypervisor("node-b", "running");
    agent["node-b"] = "paused";
    const { c, history, observer } = checker();
    c.sample();
    assert.equal(twice(history).length, 1, JSON.stringify(history.violations));
    assert.match(twice(history)[0]?.text ?? "", /vm-1 running on node-a and node-b/);
    // Reported once, not at every sample.
    c.sample();
    observer.close();
    assert.equal(twice(history).length, 1);
  });

  it("gives a copy that lost its lock, on a node whose agent runs, the fencing tick to stop, then reports it", async () => {
    lockFor("node-a", 1n);
    hypervisor("node-a", "running");
    hypervisor("node-b", "running");
    const { c, history, observer } = checker();
    c.sample();
    assert.deepEqual(twice(history), [], "reported before the agent's fencing tick could act");
    await new Promise((r) => setTimeout(r, CHAOS_BOUNDS.staleCopyStopMs + 300));
    c.sample();
    observer.close();
    assert.equal(twice(history).length, 1, "a copy still running after the grace was not reported");
  });

  it("reports nothing when the copy is stopped within the grace, nor for a node whose watchdog reset it", async () => {
    lockFor("node-a", 1n);
    hypervisor("node-a", "running");
    hypervisor("node-b", "running");
    const { c, history, observer } = checker();
    c.sample();
    hypervisor("node-b", "stopped");
    await new Promise((r) => setTimeout(r, CHAOS_BOUNDS.staleCopyStopMs + 300));
    c.sample();
    assert.deepEqual(twice(history), []);
    // A fired watchdog: the node was reset, whatever its world file still says.
    hypervisor("node-b", "running");
    agent["node-b"] = "dead";
    openSimulatedWatchdog(join(dirs.get("node-b") as string, "watchdog.json")).pet(1n, 1000);
    const o = c.sample();
    observer.close();
    assert.equal(
      o.nodes.find((n) => n.node === "node-b")?.reset,
      true,
      "watchdog file not understood",
    );
    assert.deepEqual(twice(history), []);
  });

  describe("after the heal", () => {
    async function record(node: string): Promise<void> {
      const rec = create(VmRecordSchema, {
        id: VM,
        nodeId: node,
        managed: true,
        desiredState: VmState.RUNNING,
        generation: 2n,
        spec: { ha: true, vcpus: 1, memoryBytes: 1n << 30n },
      });
      await store.put(`vms/${VM}`, encodeMessage(VmRecordSchema, rec));
    }

    it("reports an HA vm that runs nowhere, and a vm running where the store does not place it", async () => {
      await record("node-a");
      hypervisor("node-a", "stopped");
      hypervisor("node-b", "stopped");
      const { c, history, observer } = checker();
      await c.settle(800, () => []);
      assert.ok(
        history.violations.some((v) => /HA vm vm-1 .* runs on 0 nodes/.test(v.text)),
        JSON.stringify(history.violations),
      );
      hypervisor("node-b", "running");
      lockFor("node-b", 2n);
      const before = history.violations.length;
      await c.settle(800, () => ["op-1 START"]);
      observer.close();
      const late = history.violations.slice(before).map((v) => v.text);
      assert.ok(
        late.some((t) => /runs on node-b but the store places it on node-a/.test(t)),
        late.join("\n"),
      );
      assert.ok(
        late.some((t) => /operation not final: op-1 START/.test(t)),
        late.join("\n"),
      );
    });

    it("settles, reporting nothing, when the hypervisors agree with the store", async () => {
      await record("node-a");
      lockFor("node-a", 2n);
      hypervisor("node-a", "running");
      hypervisor("node-b", undefined);
      const { c, history, observer } = checker();
      await c.settle(2000, () => []);
      observer.close();
      assert.deepEqual(history.violations, []);
    });
  });
});
