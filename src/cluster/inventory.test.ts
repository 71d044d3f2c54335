import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Clock, createManualClock, RpcError, silentLogger } from "../core/index.js";
import { NodeRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { currentGeneration } from "./vm-placement.js";

const info = (id: string, hostname = `${id}.example`) =>
  create(NodeInfoSchema, { id: { id }, hostname });
const beat = (id: string, atSeconds: number, cpuLoad = 1) =>
  create(HealthSchema, {
    nodeId: { id },
    cpuLoad,
    timestamp: { seconds: BigInt(atSeconds), nanos: 0 },
  });

const sqliteStore = () =>
  createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-inv-")), "state.db"),
    logger: silentLogger,
  });

function inventory(clock: Clock = createManualClock(0), heartbeatTtlMs?: number) {
  const store = sqliteStore();
  return createInventory({ store, clock, heartbeatTtlMs });
}

const fails = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;

describe("inventory", () => {
  it("treats re-registration by the same identity as an update", async () => {
    const inv = inventory();
    assert.equal((await inv.register(info("n1"), "alice")).created, true);
    assert.equal((await inv.register(info("n1", "renamed"), "alice")).created, false);
    assert.equal((await inv.listNodes())[0]?.info?.hostname, "renamed");
  });

  it("refuses another identity claiming an existing node id", async () => {
    const inv = inventory();
    await inv.register(info("n1"), "alice");
    await assert.rejects(inv.register(info("n1"), "mallory"), fails("NODE_ID_TAKEN"));
    assert.equal((await inv.listNodes())[0]?.info?.hostname, "n1.example");
  });

  it("gives a contested node id to exactly one of many concurrent registrations", async () => {
    const inv = inventory();
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => inv.register(info("n1", `h${i}`), `owner-${i}`)),
    );
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
    assert.ok(outcomes.every((o) => o.status === "fulfilled" || fails("NODE_ID_TAKEN")(o.reason)));
  });

  it("answers NOT_FOUND for a heartbeat of an unknown node", async () => {
    await assert.rejects(inventory().heartbeat(beat("ghost", 1)), fails("NODE_NOT_FOUND"));
  });

  it("never lets an older heartbeat overwrite a newer one", async () => {
    const inv = inventory(createManualClock(1_000_000));
    await inv.register(info("n1"), "a");
    assert.equal(await inv.heartbeat(beat("n1", 200, 5)), true);
    assert.equal(await inv.heartbeat(beat("n1", 100, 9)), false);
    assert.equal((await inv.listNodes())[0]?.health?.cpuLoad, 5);
  });

  it("with a report refresh, writes a repeated report only once the refresh is due, and a changed VM at once", async () => {
    const clock = createManualClock(1_000_000);
    const store = sqliteStore();
    const inv = createInventory({ store, clock, liveness: "lease", reportRefreshMs: 60_000 });
    const report = (at: number, cpuLoad: number, state: VmState) =>
      create(HealthSchema, {
        nodeId: { id: "n1" },
        cpuLoad,
        timestamp: { seconds: BigInt(at), nanos: 0 },
        vms: [{ id: "vm-a", state, nodeId: { id: "n1" } }],
      });
    const shown = async () => (await inv.listNodes())[0];
    const revision = async () => (await store.get("nodes/n1"))?.modRevision ?? 0;
    await inv.register(info("n1"), "a");
    assert.equal(await inv.heartbeat(report(1000, 1, VmState.RUNNING)), true);
    const written = await revision();
    clock.advance(10_000);
    assert.equal(await inv.heartbeat(report(1010, 2, VmState.RUNNING)), true);
    assert.equal(await revision(), written, "a repeated report is not written");
    assert.equal((await shown())?.health?.cpuLoad, 1, "its load figure waits for the refresh");
    assert.equal((await shown())?.readiness, NodeReadiness.READY, "its lease was renewed");
    clock.advance(10_000);
    await inv.heartbeat(report(1020, 3, VmState.STOPPED));
    assert.ok((await revision()) > written, "a VM's new state is written at once");
    assert.equal((await shown())?.health?.vms[0]?.state, VmState.STOPPED);
    const changed = await revision();
    clock.advance(61_000);
    await inv.heartbeat(report(1081, 4, VmState.STOPPED));
    assert.ok((await revision()) > changed, "the refresh is due");
    assert.equal((await shown())?.health?.cpuLoad, 4);
    inv.close();
    await store.close();
  });

  it("keeps one copy of a report it wrote: its watch brings the write back as the objects written", async () => {
    const store = sqliteStore();
    const inv = createInventory({ store, clock: createManualClock(1_000_000) });
    await inv.register(info("n1"), "a");
    const report = create(HealthSchema, {
      nodeId: { id: "n1" },
      timestamp: { seconds: 1000n, nanos: 0 },
      vms: [{ id: "vm-a", state: VmState.RUNNING, nodeId: { id: "n1" } }],
    });
    await inv.listNodes(); // the watch is followed from here
    assert.equal(await inv.heartbeat(report), true);
    // Another process's write after it: once the watch shows that one, it has brought ours.
    await store.put(
      "nodes/n2",
      encodeMessage(NodeRecordSchema, create(NodeRecordSchema, { info: info("n2") })),
    );
    // Bounded at ~10 s: a loaded machine's watch can take seconds; the assertion says if it never did.
    for (let i = 0; i < 1000 && (await inv.listNodes()).length < 2; i++) await sleep(10);
    assert.equal((await inv.listNodes()).length, 2);
    const shown = (await inv.getNode("n1"))?.vms[0];
    assert.equal(shown?.id, "vm-a");
    assert.equal(shown, report.vms[0], "not a decoded second copy");
    inv.close();
    await store.close();
  });

  it("sums a node's VMs in its summary anew after each report that changes them", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock);
    await inv.register(info("n1"), "a");
    const report = (at: number, vms: { id: string; vcpus: number; gib: bigint }[]) =>
      create(HealthSchema, {
        nodeId: { id: "n1" },
        timestamp: { seconds: BigInt(at), nanos: 0 },
        vms: vms.map((v) => ({ id: v.id, vcpus: v.vcpus, memoryBytes: v.gib << 30n })),
      });
    const summary = async () => {
      const n = (await inv.listNodes())[0];
      return [n?.vmCount, n?.vcpusAllocated, n?.memoryAllocatedBytes, n?.lastHeartbeat?.seconds];
    };
    await inv.heartbeat(
      report(1000, [
        { id: "vm-a", vcpus: 2, gib: 4n },
        { id: "vm-b", vcpus: 4, gib: 8n },
      ]),
    );
    assert.deepEqual(await summary(), [2, 6, 12n << 30n, 1000n]);
    assert.deepEqual(await summary(), [2, 6, 12n << 30n, 1000n], "the same again");
    clock.advance(10_000);
    await inv.heartbeat(report(1010, [{ id: "vm-b", vcpus: 4, gib: 8n }]));
    assert.deepEqual(await summary(), [1, 4, 8n << 30n, 1010n]);
    inv.close();
  });

  it("keeps a node whose clock went back READY: its heartbeats still prove it is alive", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock, 3000);
    await inv.register(info("n1"), "a");
    await inv.heartbeat(beat("n1", 1004, 5)); // a clock 4 s ahead (within the skew), then stepped back
    for (let t = 0; t < 3; t++) {
      clock.advance(1000);
      assert.equal(await inv.heartbeat(beat("n1", 1000 + t, 1)), false);
    }
    const node = (await inv.listNodes())[0];
    assert.equal(node?.readiness, NodeReadiness.READY);
    assert.equal(node?.health?.cpuLoad, 5, "the content of older reports is still ignored");
  });

  it("holds a move against a heartbeat taken before it, then lets heartbeats rule again", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock, 3000);
    const vm = create(VmInfoSchema, { id: "vm-1", nodeId: { id: "a" } });
    for (const id of ["a", "b"]) await inv.register(info(id), "x");
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "a" }, timestamp: { seconds: 1n }, vms: [vm] }),
    );
    await inv.heartbeat(create(HealthSchema, { nodeId: { id: "b" }, timestamp: { seconds: 1n } }));
    await inv.moveVm(vm, "a", "b");
    // Both nodes' next reports were taken before the move finished.
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "a" }, timestamp: { seconds: 2n }, vms: [vm] }),
    );
    await inv.heartbeat(create(HealthSchema, { nodeId: { id: "b" }, timestamp: { seconds: 2n } }));
    assert.equal((await inv.findVm("vm-1"))?.nodeId?.id, "b");
    assert.equal((await inv.getNode("a"))?.vms.length, 0);
    assert.equal((await inv.getNode("b"))?.summary.vmCount, 1);
    // Past the pin, a node's report is the truth again.
    clock.advance(3001);
    await inv.heartbeat(create(HealthSchema, { nodeId: { id: "b" }, timestamp: { seconds: 3n } }));
    assert.equal((await inv.getNode("b"))?.vms.length, 0);
  });

  it("records every one of many moves finishing at once off one node (a drain of 32)", async () => {
    const inv = inventory(createManualClock(1_000_000), 3000);
    const targets = ["b", "c", "d", "e"];
    for (const id of ["a", ...targets]) await inv.register(info(id), "x");
    const vms = Array.from({ length: 32 }, (_, i) =>
      create(VmInfoSchema, { id: `vm-${i}`, nodeId: { id: "a" } }),
    );
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "a" }, timestamp: { seconds: 1n }, vms }),
    );
    for (const id of targets)
      await inv.heartbeat(create(HealthSchema, { nodeId: { id }, timestamp: { seconds: 1n } }));
    await Promise.all(vms.map((vm, i) => inv.moveVm(vm, "a", targets[i % 4] ?? "b")));
    assert.equal((await inv.getNode("a"))?.vms.length, 0, "the drained node lists nothing");
    for (const id of targets) assert.equal((await inv.getNode(id))?.vms.length, 8, id);
  });

  it("reports READY while heartbeats are within the TTL and NOT_READY after", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock, 30_000);
    await inv.register(info("n1"), "a");
    assert.equal(
      (await inv.listNodes())[0]?.readiness,
      NodeReadiness.NOT_READY,
      "never heard from",
    );
    await inv.heartbeat(beat("n1", 1000));
    clock.advance(30_000);
    assert.equal((await inv.listNodes())[0]?.readiness, NodeReadiness.READY);
    clock.advance(1);
    const node = (await inv.listNodes())[0];
    assert.equal(node?.readiness, NodeReadiness.NOT_READY);
    assert.equal(node?.heartbeatAgeMs, 30_001n);
  });

  it("refuses a report stamped later than the clock plus the skew, and stores nothing of it but its skew", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock, 30_000);
    await inv.register(info("n1"), "a");
    const century = 100 * 365 * 86_400;
    await assert.rejects(inv.heartbeat(beat("n1", 1000 + century, 9)), fails("REPORT_FROM_FUTURE"));
    await assert.rejects(inv.heartbeat(beat("n1", 1009, 9)), fails("REPORT_FROM_FUTURE"));
    const refused = (await inv.listNodes())[0];
    assert.equal(refused?.health, undefined, "its content is not stored");
    assert.equal(refused?.reportSkewMs, 9000n, "how far ahead it was is shown");
    // The node was heard from: a skewed stamp must not make it look down.
    assert.equal(refused?.readiness, NodeReadiness.READY);
    // Genuine reports still apply: nothing from the future sits there to look newer.
    assert.equal(await inv.heartbeat(beat("n1", 1000, 2)), true);
    assert.equal(await inv.heartbeat(beat("n1", 1005, 3)), true, "5 s ahead is within the skew");
    assert.equal((await inv.listNodes())[0]?.health?.cpuLoad, 3);
  });

  it("measures liveness on its own clock: a step of the wall clock makes no node NOT_READY", async () => {
    const wall = createManualClock(1_000_000);
    const steady = createManualClock(5_000);
    const store = sqliteStore();
    const inv = createInventory({
      store,
      clock: wall,
      livenessClock: steady,
      heartbeatTtlMs: 30_000,
    });
    await inv.register(info("n1"), "a");
    await inv.heartbeat(beat("n1", 1000));
    wall.advance(10 * 60_000); // NTP steps the wall clock 10 min ahead
    assert.equal((await inv.listNodes())[0]?.readiness, NodeReadiness.READY);
    steady.advance(30_001);
    const down = (await inv.listNodes())[0];
    assert.equal(down?.readiness, NodeReadiness.NOT_READY, "30 s of its own clock later");
    assert.equal(down?.notReadyForMs, 1n);
  });

  it("gives a vm a new generation whenever a report places it on another node", async () => {
    const store = sqliteStore();
    const inv = createInventory({ store, clock: createManualClock(1_000_000) });
    await inv.register(info("n1"), "a");
    await inv.register(info("n2"), "a");
    const report = (node: string, at: number, vms: string[]) =>
      create(HealthSchema, {
        nodeId: { id: node },
        timestamp: { seconds: BigInt(at) },
        vms: vms.map((id) => ({ id, nodeId: { id: node } })),
      });
    const before = BigInt(await store.revision());
    await inv.heartbeat(report("n1", 1, ["vm-1"]));
    const first = await currentGeneration(store, "vm-1");
    assert.ok(first > before, `first placed, above the store's revision (${first})`);
    await inv.heartbeat(report("n1", 2, ["vm-1"]));
    assert.equal(await currentGeneration(store, "vm-1"), first, "the same placement");
    // Moved outside the control plane: n1 no longer has it, n2 does.
    await inv.heartbeat(report("n1", 3, []));
    await inv.heartbeat(report("n2", 3, ["vm-1"]));
    assert.equal((await inv.findVm("vm-1"))?.nodeId?.id, "n2");
    assert.equal(
      await currentGeneration(store, "vm-1"),
      first + 1n,
      "a new placement, a new generation",
    );
  });

  it("takes a VM's tenant from the control plane, never from a report", async () => {
    const inv = inventory(createManualClock(1_000_000));
    await inv.register(info("n1"), "a");
    const report = (tenant: string, at: number) =>
      create(HealthSchema, {
        nodeId: { id: "n1" },
        timestamp: { seconds: BigInt(at) },
        vms: [{ id: "vm-1", tenant, nodeId: { id: "n1" } }],
      });
    await inv.heartbeat(report("evil", 1));
    assert.equal((await inv.findVm("vm-1"))?.tenant, "", "unassigned: no tenant");
    assert.equal((await inv.assignTenant("vm-1", "acme", "admin")).tenant, "acme");
    await inv.heartbeat(report("evil", 2));
    assert.equal((await inv.findVm("vm-1"))?.tenant, "acme");
    assert.equal((await inv.listVms())[0]?.tenant, "acme");
    assert.equal((await inv.getNode("n1"))?.vms[0]?.tenant, "acme");
    assert.equal((await inv.listNodes())[0]?.health?.vms[0]?.tenant, "acme");
    await assert.rejects(inv.assignTenant("vm-none", "acme", "admin"), fails("VM_NOT_FOUND"));
    // Seeding never overrides an assignment.
    await inv.seedTenants([{ id: "vm-1", tenant: "globex" }], "simulation");
    assert.equal((await inv.findVm("vm-1"))?.tenant, "acme");
  });

  it("shows a VM's new tenant on its node's listing at once, and keeps the other nodes' listings as built", async () => {
    const inv = inventory(createManualClock(1_000_000));
    for (const n of ["n1", "n2"]) {
      await inv.register(info(n), "a");
      await inv.heartbeat(
        create(HealthSchema, {
          nodeId: { id: n },
          timestamp: { seconds: 1n },
          vms: [
            { id: `${n}-vm`, nodeId: { id: n } },
            { id: `${n}-other`, nodeId: { id: n } },
          ],
        }),
      );
    }
    await inv.assignTenant("n2-vm", "globex", "admin");
    const before = await inv.listNodes();
    await inv.assignTenant("n1-vm", "acme", "admin");
    await inv.setLabels("n1-other", { tier: "gold" }, []);
    const after = await inv.listNodes();
    const vms = (i: number) => after[i]?.health?.vms ?? [];
    assert.equal(vms(0).find((v) => v.id === "n1-vm")?.tenant, "acme", "no heartbeat since");
    assert.deepEqual(vms(0).find((v) => v.id === "n1-other")?.labels, { tier: "gold" });
    assert.equal(vms(1).find((v) => v.id === "n2-vm")?.tenant, "globex");
    assert.equal(after[1]?.health, before[1]?.health, "n2's VMs were not rebuilt");
    assert.notEqual(after[0]?.health, before[0]?.health);
    // And back: a tenant taken away shows as well.
    await inv.assignTenant("n1-vm", "", "admin");
    const again = await inv.listNodes();
    assert.equal(again[0]?.health?.vms.find((v) => v.id === "n1-vm")?.tenant, "");
  });

  it("lets a node's report neither move nor relabel a VM placed on another node", async () => {
    const inv = inventory(createManualClock(1_000_000));
    for (const id of ["a", "b"]) await inv.register(info(id), id);
    const vm = (node: string) => ({ id: "vm-1", tenant: "b-tenant", nodeId: { id: node } });
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "a" }, timestamp: { seconds: 1n }, vms: [vm("a")] }),
    );
    await inv.assignTenant("vm-1", "acme", "admin");
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "b" }, timestamp: { seconds: 2n }, vms: [vm("b")] }),
    );
    const found = await inv.findVm("vm-1");
    assert.equal(found?.nodeId?.id, "a");
    assert.equal(found?.tenant, "acme");
    assert.equal((await inv.getNode("b"))?.vms.length, 0, "b's claim is left out");
    // Once a no longer has it (moved outside the control plane), b's report places it.
    await inv.heartbeat(create(HealthSchema, { nodeId: { id: "a" }, timestamp: { seconds: 3n } }));
    await inv.heartbeat(
      create(HealthSchema, { nodeId: { id: "b" }, timestamp: { seconds: 4n }, vms: [vm("b")] }),
    );
    assert.equal((await inv.findVm("vm-1"))?.nodeId?.id, "b");
    assert.equal((await inv.findVm("vm-1"))?.tenant, "acme", "the tenant stays with the VM");
  });

  it("takes a report only from the node itself or the identity that registered it", async () => {
    const inv = inventory(createManualClock(1_000_000));
    await inv.register(info("n1"), "ops");
    await assert.rejects(
      inv.heartbeat(beat("n1", 1), undefined, "mallory"),
      fails("PERMISSION_DENIED"),
    );
    assert.equal((await inv.listNodes())[0]?.health, undefined, "nothing stored");
    assert.equal(await inv.heartbeat(beat("n1", 1), undefined, "ops"), true);
    assert.equal(await inv.heartbeat(beat("n1", 2), undefined, "n1"), true);
  });

  it("lets a node's re-registration change only its own description, never the control plane's facts", async () => {
    const inv = inventory(createManualClock(1_000_000));
    await inv.register(info("n1"), "n1");
    await inv.heartbeat(
      create(HealthSchema, {
        nodeId: { id: "n1" },
        timestamp: { seconds: 1n },
        vms: [{ id: "vm-1", tenant: "x", nodeId: { id: "n1" } }],
      }),
    );
    await inv.assignTenant("vm-1", "acme", "admin");
    await inv.cordon("n1", true);
    await inv.register(info("n1", "renamed"), "n1");
    const node = await inv.getNode("n1");
    assert.equal(node?.summary.info?.hostname, "renamed");
    assert.equal(node?.summary.cordoned, true, "cordon is the control plane's");
    assert.equal(node?.vms[0]?.tenant, "acme");
    await assert.rejects(inv.register(info("n1"), "n2"), fails("NODE_ID_TAKEN"));
  });

  it("lists nodes sorted by id", async () => {
    const inv = inventory();
    for (const id of ["c", "a", "b"]) await inv.register(info(id), "x");
    assert.deepEqual(
      (await inv.listNodes()).map((n) => n.info?.id?.id),
      ["a", "b", "c"],
    );
  });
});
