import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import client from "prom-client";
import { AUDIT_INTENTS, createInventory, type Inventory } from "../cluster/index.js";
import { createManualClock, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { type ClusterMetrics, createClusterMetrics } from "./cluster-metrics.js";

/** The value of one gauge sample in `registry`, or undefined. */
async function value(registry: client.Registry, name: string, labels: Record<string, string>) {
  const metric = await registry.getSingleMetric(name)?.get();
  return metric?.values.find((v) =>
    Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l),
  )?.value;
}

/** Cluster metrics on a SQLite store of their own, for `use`; closed after. */
async function withMetrics(
  use: (m: { registry: client.Registry; store: KvStore; metrics: ClusterMetrics }) => Promise<void>,
) {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-cluster-metrics-")), "state.db"),
    logger: silentLogger,
  });
  const closing = new AbortController();
  try {
    const registry = new client.Registry();
    const metrics = createClusterMetrics({
      registry,
      store,
      inventory: createInventory({ store, clock: createManualClock(1_000_000) }),
      clock: createManualClock(1_000_000),
      logger: silentLogger,
      closing: closing.signal,
    });
    await use({ registry, store, metrics });
  } finally {
    closing.abort();
    await store.close();
  }
}

describe("cluster metrics", () => {
  it("count nodes and VMs by state with one listing of the nodes per scrape and none of the VMs", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-cluster-metrics-")), "state.db"),
      logger: silentLogger,
    });
    const clock = createManualClock(1_000_000);
    const closing = new AbortController();
    try {
      const inventory = createInventory({ store, clock });
      let seconds = 1n;
      const report = async (node: string, states: VmState[]) => {
        await inventory.register(create(NodeInfoSchema, { id: { id: node } }), "owner");
        await inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id: node },
            timestamp: { seconds: seconds++, nanos: 0 },
            vms: states.map((state, i) =>
              create(VmInfoSchema, { id: `${node}-vm-${i}`, name: `vm-${i}`, state }),
            ),
          }),
        );
      };
      await report("node-a", [VmState.RUNNING, VmState.RUNNING, VmState.STOPPED]);
      await report("node-b", [VmState.RUNNING, VmState.CRASHED]);
      const calls = { listNodes: 0, listVms: 0 };
      const counted: Inventory = {
        ...inventory,
        listNodes: (signal) => {
          calls.listNodes++;
          return inventory.listNodes(signal);
        },
        listVms: (signal) => {
          calls.listVms++;
          return inventory.listVms(signal);
        },
      };
      const registry = new client.Registry();
      createClusterMetrics({
        registry,
        store,
        inventory: counted,
        clock,
        logger: silentLogger,
        closing: closing.signal,
      });
      await registry.metrics();
      assert.deepEqual(calls, { listNodes: 1, listVms: 0 });
      assert.equal(await value(registry, "debvisor_nodes", { readiness: "ready" }), 2);
      assert.equal(await value(registry, "debvisor_vms", { state: "running" }), 3);
      assert.equal(await value(registry, "debvisor_vms", { state: "stopped" }), 1);
      assert.equal(await value(registry, "debvisor_vms", { state: "crashed" }), 1);
      // node-a's running VMs stop; its stopped one is gone.
      await report("node-a", [VmState.STOPPED, VmState.STOPPED]);
      assert.equal(await value(registry, "debvisor_vms", { state: "running" }), 1);
      assert.equal(await value(registry, "debvisor_vms", { state: "stopped" }), 2);
    } finally {
      closing.abort();
      await store.close();
    }
  });

  it("count the failover controller's decisions by action, an HA start not answered as unknown", () =>
    withMetrics(async ({ registry, metrics }) => {
      const name = "debvisor_failover_decisions_total";
      for (const action of ["restarted", "skipped", "failed", "adopted", "unknown"])
        assert.equal(await value(registry, name, { action }), 0, `${action} shown from the start`);
      const d = { vmId: "vm-1", node: "node-a", tenant: "", detail: "x" };
      metrics.failoverDecision({ ...d, action: "unknown" });
      metrics.failoverDecision({ ...d, action: "unknown" });
      metrics.failoverDecision({ ...d, action: "restarted" });
      assert.equal(await value(registry, name, { action: "unknown" }), 2);
      assert.equal(await value(registry, name, { action: "restarted" }), 1);
      assert.equal(await value(registry, name, { action: "failed" }), 0);
    }));

  it("show how many of the control plane's acts are not yet audited (intents in the store), at each scrape", () =>
    withMetrics(async ({ registry, store }) => {
      const name = "debvisor_audit_intents_pending";
      assert.equal(await value(registry, name, {}), 0);
      const bytes = new Uint8Array([1]);
      for (const id of ["a", "b", "c"]) await store.put(`${AUDIT_INTENTS}${id}`, bytes);
      await store.put("audit-intents-other/x", bytes); // another prefix: not counted
      assert.equal(await value(registry, name, {}), 3);
      await store.delete(`${AUDIT_INTENTS}b`);
      assert.equal(await value(registry, name, {}), 2, "a told act leaves the count");
    }));
});
