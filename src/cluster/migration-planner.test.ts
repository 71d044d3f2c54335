import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { HypervisorDriver } from "../drivers/index.js";
import { NodeReadiness, type NodeSummary, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createLocalExecutors } from "./executors.js";
import { createPlanner, type PlanInput, type Reserved } from "./migration-planner.js";

const GIB = 1024n ** 3n;

function node(
  id: string,
  extra: Partial<{
    ready: boolean;
    cordoned: boolean;
    cpu: string;
    vcpus: number;
    mem: bigint;
    pools: string[];
    noLive: boolean;
  }> = {},
): NodeSummary {
  return create(NodeSummarySchema, {
    info: {
      id: { id },
      capacity: { cpuCores: 8, memoryBytes: 64n * GIB },
      cpuModel: extra.cpu ?? "EPYC-Milan",
      cpuModels: ["EPYC", "Skylake-Server"],
      sharedPools: extra.pools ?? ["rbd"],
      liveMigrationDisabled: extra.noLive ?? false,
    },
    readiness: extra.ready === false ? NodeReadiness.NOT_READY : NodeReadiness.READY,
    cordoned: extra.cordoned ?? false,
    vcpusAllocated: extra.vcpus ?? 0,
    memoryAllocatedBytes: extra.mem ?? 0n,
  });
}

function vm(
  extra: Partial<Omit<VmInfo, "$typeName" | "disks" | "nodeId">> & {
    disks?: { backend: StorageBackend; pool: string; name: string }[];
  } = {},
): VmInfo {
  const { disks, ...rest } = extra;
  return create(VmInfoSchema, {
    id: "vm-1",
    tenant: "acme",
    state: VmState.RUNNING,
    vcpus: 4,
    memoryBytes: 8n * GIB,
    disks: disks ?? [{ backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "vm-1-disk0" }],
    liveMigratable: true,
    cpuModel: "host-model",
    nodeId: { id: "a" },
    ...rest,
  });
}

const driver = (id: string, live = true): HypervisorDriver => ({
  kind: "test",
  nodeId: id,
  capabilities: { liveMigration: live, offlineMigration: true },
  list: async () => [],
  info: async () => undefined,
  start: async () => {},
  stop: async () => {},
  migrate: async () => {},
});

function planner(replicated: string[] = [], liveDrivers = true) {
  return createPlanner({
    executors: createLocalExecutors((id) => driver(id, liveDrivers)),
    replicas: { hasReplica: async (_d, nodeId) => replicated.includes(nodeId) },
  });
}

function input(over: Partial<PlanInput> = {}): PlanInput {
  return {
    vm: vm(),
    nodes: [node("a"), node("b")],
    reserved: new Map<string, Reserved>(),
    inFlight: false,
    target: "b",
    allowDowntime: false,
    ...over,
  };
}

/** Plans and returns the first failing check's name and reason (or "allowed"). */
async function refusal(over: Partial<PlanInput>, replicated?: string[], liveDrivers?: boolean) {
  const plan = await planner(replicated, liveDrivers).plan(input(over));
  const failed = plan.checks.find((c) => !c.passed);
  assert.equal(plan.allowed, failed === undefined);
  return failed === undefined ? "allowed" : `${failed.name}: ${failed.reason}`;
}

describe("migration planning", () => {
  it("allows a live move to a ready node with room, listing every check", async () => {
    const plan = await planner().plan(input());
    assert.ok(plan.allowed);
    assert.ok(plan.live);
    assert.deepEqual(
      plan.checks.map((c) => c.name),
      [
        "vm_exists",
        "source",
        "source_ready",
        "no_migration_in_flight",
        "no_operation_in_flight",
        "target_exists",
        "target_differs",
        "target_ready",
        "target_schedulable",
        "target_cpu",
        "target_memory",
        "cpu_compatible",
        "storage_reachable",
        "target_holds_no_copy",
        "live_or_downtime",
        "executors",
      ],
    );
  });

  it("finds a target and the source whatever the case of their ids", async () => {
    // Registered `node-02`, asked for as `Node-02`: one node, as in the inventory.
    const nodes = [node("Node-01"), node("node-02")];
    const plan = await planner().plan(
      input({
        nodes,
        vm: vm({ nodeId: { id: "node-01" } } as never),
        target: "Node-02",
        source: "NODE-01",
      }),
    );
    assert.equal(plan.checks.find((c) => !c.passed)?.reason, undefined);
    assert.ok(plan.allowed);
    assert.equal(plan.target, "node-02", "the registered spelling");
    assert.equal(plan.source, "Node-01");
    // Moving to the node it already runs on is refused in any case.
    assert.equal(
      await refusal({ nodes, vm: vm({ nodeId: { id: "node-01" } } as never), target: "NODE-01" }),
      "target_differs: vm already runs on Node-01",
    );
    // With no target, the source in another case is not a candidate.
    const auto = await planner().plan(
      input({ nodes, vm: vm({ nodeId: { id: "NODE-01" } } as never), target: undefined }),
    );
    assert.equal(auto.target, "node-02");
  });

  it("refuses each failed check with its reason", async () => {
    assert.match(await refusal({ source: "c" }), /^source: vm runs on a, not c/);
    assert.match(await refusal({ inFlight: true }), /^no_migration_in_flight/);
    assert.equal(
      await refusal({ pendingOperation: "op-1" }),
      "no_operation_in_flight: operation op-1 on this vm has no outcome yet: wait for it",
    );
    assert.match(await refusal({ target: "zz" }), /^target_exists: node zz is not registered/);
    assert.match(await refusal({ target: "a" }), /^target_differs/);
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { ready: false })] }),
      /^target_ready/,
    );
    assert.match(
      await refusal({ nodes: [node("a", { ready: false }), node("b")] }),
      /^source_ready/,
    );
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { cordoned: true })] }),
      /^target_schedulable/,
    );
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { vcpus: 30 })] }),
      /^target_cpu: b has 2 vCPUs free/,
    );
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { mem: 60n * GIB })] }),
      /^target_memory: b has 4.0 GiB free/,
    );
    assert.match(
      await refusal({
        vm: vm({ cpuModel: "host-passthrough" }),
        nodes: [node("a"), node("b", { cpu: "EPYC-Rome" })],
      }),
      /^cpu_compatible: host-passthrough vm needs host CPU EPYC-Milan/,
    );
    assert.match(
      await refusal({ vm: vm({ cpuModel: "Cascadelake-Server" }) }),
      /^cpu_compatible: b does not offer/,
    );
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { pools: [] })] }),
      /^storage_reachable: b does not reach RBD pool rbd/,
    );
    const zfs = vm({
      disks: [{ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" }],
    });
    assert.match(
      await refusal({ vm: zfs }),
      /^storage_reachable: ZFS dataset tank\/vm-1-disk0 is local to a and has no replica on b/,
    );
    assert.equal(await refusal({ vm: zfs }, ["b"]), "allowed");
    assert.match(
      await refusal({ vm: vm({ liveMigratable: false }) }),
      /^live_or_downtime: cannot migrate live: the vm has passthrough/,
    );
    assert.match(
      await refusal({ nodes: [node("a"), node("b", { noLive: true })] }),
      /^live_or_downtime: cannot migrate live: b refuses/,
    );
    assert.match(
      await refusal({}, [], false),
      /^live_or_downtime: cannot migrate live: test on a cannot/,
    );
    assert.equal(
      await refusal({ vm: vm({ liveMigratable: false }), allowDowntime: true }),
      "allowed",
    );
    assert.equal(
      await refusal({ vm: vm({ state: VmState.STOPPED, liveMigratable: false }) }),
      "allowed",
    );
  });

  it("asks a catalogue that can list copies once per disk, not once per candidate", async () => {
    let listed = 0;
    let asked = 0;
    const p = createPlanner({
      executors: createLocalExecutors((id) => driver(id)),
      replicas: {
        hasReplica: async () => {
          asked++;
          return false;
        },
        replicasOf: async () => {
          listed++;
          return [{ nodeId: "c" }];
        },
      },
    });
    const zfs = vm({
      disks: [{ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" }],
    });
    const plan = await p.plan(
      input({ vm: zfs, target: undefined, nodes: [node("a"), node("b"), node("c"), node("d")] }),
    );
    assert.equal(plan.target, "c", "the only node holding a copy");
    assert.deepEqual([listed, asked], [1, 0]);
  });

  it("counts reservations of in-flight migrations against the target", async () => {
    const reserved = new Map([["b", { vcpus: 0, memoryBytes: 60n * GIB }]]);
    assert.match(
      await refusal({ reserved }),
      /^target_memory: b has 4.0 GiB free after reservations/,
    );
  });

  it("tells a tenant-confined caller in words whether a node has room, never its free figures", async () => {
    const figures = /\d\s*(GiB|vCPUs)/;
    const confined = { confined: true };
    assert.equal(
      await refusal({ ...confined, nodes: [node("a"), node("b", { mem: 60n * GIB })] }),
      "target_memory: b has not enough free memory for the vm",
    );
    assert.equal(
      await refusal({ ...confined, nodes: [node("a"), node("b", { vcpus: 30 })] }),
      "target_cpu: b has not enough free vCPUs for the vm",
    );
    const picked = await planner().plan(
      input({ ...confined, target: undefined, nodes: [node("a"), node("b"), node("c")] }),
    );
    assert.ok(picked.allowed);
    assert.doesNotMatch(picked.targetReason, figures, picked.targetReason);
    assert.match(picked.targetReason, /^most free memory after reservations of 2 nodes/);
    const refused = await planner().plan(
      input({
        ...confined,
        target: undefined,
        nodes: [node("a"), node("b", { mem: 60n * GIB }), node("c", { vcpus: 30 })],
      }),
    );
    assert.equal(refused.allowed, false);
    const reasons = [...picked.checks, ...refused.checks].map((c) => c.reason);
    for (const reason of reasons) assert.doesNotMatch(reason, figures, reason);
    assert.ok(reasons.includes("b has enough free memory for the vm"), reasons.join("\n"));
    assert.match(reasons.join("\n"), /b: b has not enough free memory for the vm; c: c has not/);
  });

  it("picks the node with the most free memory when no target is given, and says why", async () => {
    const plan = await planner().plan(
      input({
        target: undefined,
        nodes: [
          node("a"),
          node("b", { mem: 40n * GIB }),
          node("c", { mem: 10n * GIB }),
          node("d", { cordoned: true }),
        ],
      }),
    );
    assert.ok(plan.allowed);
    assert.equal(plan.target, "c");
    assert.match(
      plan.targetReason,
      /most free memory after reservations \(54.0 GiB, 32 vCPUs free\) of 2 nodes/,
    );
  });

  it("with no target and no node passing, says why for each candidate", async () => {
    const plan = await planner().plan(
      input({
        target: undefined,
        nodes: [node("a"), node("b", { ready: false }), node("c", { cordoned: true })],
      }),
    );
    assert.equal(plan.allowed, false);
    const last = plan.checks.at(-1);
    assert.equal(last?.name, "target");
    assert.match(last?.reason ?? "", /none of 2 other nodes.*b: b is not ready.*c: c is cordoned/);
  });

  it("plans a failover without the source: it must be down", async () => {
    const p = planner();
    const up = await p.plan(input({ failover: true, target: undefined }));
    assert.match(up.checks.find((c) => !c.passed)?.name ?? "", /source_down/);
    // An operation waiting on the down node does not hold the failover up: the fence refuses it there.
    const down = await p.plan(
      input({
        failover: true,
        target: undefined,
        nodes: [node("a", { ready: false }), node("b")],
        pendingOperation: "op-1",
      }),
    );
    assert.ok(down.allowed);
    assert.equal(down.target, "b");
  });
});
