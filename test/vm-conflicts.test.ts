import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import client from "prom-client";
import { currentGeneration } from "../src/cluster/index.js";
import { silentLogger } from "../src/core/index.js";
import { MigrationKind, MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { HealthSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createClusterMetrics } from "../src/server/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  startClusterHarness,
} from "./helpers/cluster-harness.js";

describe("a vm reported by two nodes (a conflict)", () => {
  let h: ClusterHarness;
  const closing = new AbortController();
  afterEach(async () => {
    closing.abort();
    await h.close();
  });

  it("V5: a fenced node back with a stale copy never moves the vm; the copy is shown, counted, removed once; failover follows the placement", async () => {
    /** The stale copy node-01 reports once it is back, until the control plane removes it. */
    let staleCopy: VmInfo | undefined;
    /** A report of the vm's host that misses it (an agent listing domains while restarting). */
    let hidden: { node: string; vm: string } | undefined;
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 6,
      failover: true,
      report: (nodeId, health) => {
        if (hidden?.node === nodeId)
          return create(HealthSchema, {
            ...health,
            vms: health.vms.filter((v) => v.id !== hidden?.vm),
          });
        return nodeId === "node-01" && staleCopy !== undefined
          ? create(HealthSchema, { ...health, vms: [...health.vms, staleCopy] })
          : health;
      },
    });
    const controller = h.runtime.controller;
    assert.ok(controller);
    const registry = new client.Registry();
    createClusterMetrics({
      registry,
      store: h.store,
      inventory: h.inventory,
      clock: h.clock,
      logger: silentLogger,
      closing: closing.signal,
    });
    const conflicts = async () =>
      (await registry.getSingleMetric("debvisor_vm_conflicts")?.get())?.values[0]?.value;
    const vm = ((await h.inventory.getNode("node-01"))?.vms ?? []).find(
      (v) => v.ha && onRbd(v) && v.state === VmState.RUNNING,
    );
    assert.ok(vm, "an HA vm on shared storage runs on node-01");
    const step = async () => {
      h.clock.advance(500);
      await h.beat();
      await controller.tick();
    };

    // node-01 is cut off, fences itself, and the vm is failed over.
    h.sim.faults.partitionNode("node-01");
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 2000; t += 500) await step();
    const host = h.sim.locate(vm.id)?.nodeId ?? "";
    assert.notEqual(host, "node-01");
    assert.equal(h.sim.locate(vm.id)?.state, "running");
    const generation = await currentGeneration(h.store, vm.id);

    // node-01 comes back, reporting its stopped copy of the vm.
    h.sim.faults.healNode("node-01");
    staleCopy = {
      ...vm,
      state: VmState.STOPPED,
      nodeId: { $typeName: "debvisor.v1.NodeId", id: "node-01" },
    };
    for (let i = 0; i < 8; i++) {
      h.clock.advance(500);
      await h.beat();
    }
    const listed = (await h.inventory.listVms()).filter((v) => v.id === vm.id);
    assert.equal(listed.length, 1, "listed once");
    assert.equal(listed[0]?.nodeId?.id, host, "at its placement, whichever node reported last");
    assert.deepEqual(listed[0]?.staleCopyNodes, ["node-01"], "with the conflict shown");
    assert.deepEqual((await h.inventory.findVm(vm.id))?.staleCopyNodes, ["node-01"]);
    assert.equal(await conflicts(), 1, "and counted");
    assert.equal(await currentGeneration(h.store, vm.id), generation, "a report never places it");
    // Not even while its host's report misses it for a moment.
    hidden = { node: host, vm: vm.id };
    for (let i = 0; i < 3; i++) {
      h.clock.advance(500);
      await h.beat();
    }
    hidden = undefined;
    h.clock.advance(500);
    await h.beat();
    assert.equal(await currentGeneration(h.store, vm.id), generation, "still placed on its host");
    assert.equal((await h.inventory.findVm(vm.id))?.nodeId?.id, host);

    // The controller has node-01 stop (and undefine) its copy, exactly once.
    await controller.tick();
    await controller.tick();
    assert.deepEqual(
      h.stops.filter((s) => s === `node-01/${vm.id}`),
      [`node-01/${vm.id}`],
    );
    staleCopy = undefined; // gone from node-01, as its hypervisor did
    for (let i = 0; i < 4; i++) await step();
    assert.equal(h.stops.filter((s) => s === `node-01/${vm.id}`).length, 1, "sent once");
    assert.deepEqual((await h.inventory.findVm(vm.id))?.staleCopyNodes, []);
    assert.equal(await conflicts(), 0);

    // The new host dies: the vm fails over again, decided by its placement's liveness.
    h.sim.faults.killNode(host);
    for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + 2000; t += 500) await step();
    const failovers = (await h.runtime.engine.list(undefined)).filter(
      (m) =>
        m.kind === MigrationKind.FAILOVER &&
        m.vm?.vmId === vm.id &&
        m.state === MigrationState.SUCCEEDED,
    );
    assert.equal(failovers.length, 2, "restarted after each host's death");
    assert.equal(h.sim.locate(vm.id)?.state, "running");
    assert.notEqual(h.sim.locate(vm.id)?.nodeId, host);
    assert.deepEqual(h.sim.violations(), []);
  });
});
