// Placements confirmed by their node's report (awaiting_report, confirmed_node):
// no other node's report takes a VM its placed node never reported (a create
// that has not run: a stolen node certificate must not take it), a node id in
// another case is the same node, and records from before the fields keep the
// old rule. Found by adversarial reviews.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import { currentGeneration } from "./vm-placement.js";

/** An inventory on a real store, its nodes registered, and vm-1's record written as given. */
async function world(nodes: string[], vm: MessageInitShape<typeof VmRecordSchema>) {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-confirm-")), "state.db"),
    logger: silentLogger,
  });
  const inv = createInventory({ store, clock: createManualClock(1_000_000) });
  for (const id of nodes)
    await inv.register(create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` }), id);
  await store.put("vms/vm-1", encodeMessage(VmRecordSchema, create(VmRecordSchema, vm)));
  let second = 0;
  return {
    store,
    inv,
    /** A report of `node` listing `vms`. */
    report: (node: string, vms: string[], state = VmState.RUNNING) =>
      inv.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(++second) },
          vms: vms.map((id) => ({ id, state, nodeId: { id: node } })),
        }),
      ),
    record: async () => (await getMessage(store, VmRecordSchema, "vms/vm-1"))?.message,
  };
}

describe("placements confirmed by their node's report", () => {
  it("lets no other node's report take a VM placed by a create its node has not reported yet", async () => {
    // As CreateVm writes it: placed on a, a generation, the tenant's; a has not run it yet.
    const w = await world(["a", "b"], {
      id: "vm-1",
      tenant: "acme",
      nodeId: "a",
      generation: 7n,
      managed: true,
      awaitingReport: true,
    });
    // b (a stolen certificate, say) reports it, before and after a reports without it.
    await w.report("b", ["vm-1"]);
    assert.equal((await w.record())?.nodeId, "a");
    await w.report("a", []);
    await w.report("b", ["vm-1"]);
    assert.equal((await w.record())?.nodeId, "a", "a never had it: b's report takes nothing");
    assert.equal((await w.inv.getNode("b"))?.vms.length, 0, "b's copy is not shown as the VM");
    assert.equal(await currentGeneration(w.store, "vm-1"), 7n);
    // Once a has reported it, a report without it means it left a: b's report places it.
    await w.report("a", ["vm-1"]);
    const rec = await w.record();
    assert.deepEqual(
      [rec?.confirmedNode, rec?.confirmedGeneration, rec?.awaitingReport],
      ["a", 7n, false],
    );
    await w.report("a", []);
    await w.report("b", ["vm-1"]);
    assert.equal((await w.record())?.nodeId, "b");
    assert.equal(await currentGeneration(w.store, "vm-1"), 8n);
    await w.store.close();
  });

  it("a node registered as Node-A confirms (and keeps) a VM CreateVm placed on Node-A", async () => {
    // The placement engine writes the node's info id, in its case.
    const w = await world(["Node-A"], {
      id: "vm-1",
      tenant: "acme",
      nodeId: "Node-A",
      generation: 7n,
      managed: true,
      awaitingReport: true,
    });
    await w.report("Node-A", ["vm-1"]);
    await w.report("Node-A", ["vm-1"]);
    const rec = await w.record();
    const shown = (await w.inv.getNode("Node-A"))?.vms.map((v) => v.id) ?? [];
    const conflicts = (await w.inv.conflicts()).map((c) => c.id);
    assert.deepEqual(
      {
        shown,
        conflicts,
        confirmed: rec?.confirmedNode.toLowerCase(),
        generation: rec?.generation,
      },
      { shown: ["vm-1"], conflicts: [], confirmed: "node-a", generation: 7n },
      "its own node's report of its VM is no stale copy of it",
    );
    await w.store.close();
  });

  it("a record from before confirmed_node: a failover to z whose restart never ran; a, back with the VM, takes it back", async () => {
    // Written before the upgrade: vm-1 ran on a (generation 7), a went down, the failover placed
    // it on z (generation 8) and z's restart failed. No confirmed_node: the fields are new.
    const w = await world(["a", "z"], {
      id: "vm-1",
      tenant: "acme",
      nodeId: "z",
      generation: 8n,
      managed: true,
    });
    await w.report("z", []);
    // a is back, its copy stopped by its self-fence: the only copy of the VM anywhere.
    await w.report("a", ["vm-1"], VmState.STOPPED);
    await w.report("z", []);
    await w.report("a", ["vm-1"], VmState.STOPPED);
    assert.equal(
      (await w.record())?.nodeId,
      "a",
      `placed where its only copy is; conflicts: ${(await w.inv.conflicts()).map((c) => c.id).join(",")}`,
    );
    await w.store.close();
  });

  it("a node back with its self-fenced copy takes no placement a failover in flight holds; once it ended unreached, it may", async () => {
    // vm-1 ran on a (confirmed there, generation 7); a went down, and a failover placed it on z
    // (generation 8) and holds its lock while z restarts it. a comes back with its stopped copy
    // before z's answer (z cut off in its turn: chaos, seed 42).
    const w = await world(["a", "z"], {
      id: "vm-1",
      tenant: "acme",
      nodeId: "z",
      generation: 8n,
      managed: true,
      awaitingReport: true,
      confirmedNode: "a",
      confirmedGeneration: 7n,
    });
    await w.store.put(`${MIGRATION_LOCKS}vm-1`, new TextEncoder().encode("m-failover"));
    await w.report("z", []);
    await w.report("a", ["vm-1"], VmState.STOPPED);
    assert.deepEqual(
      [(await w.record())?.nodeId, await currentGeneration(w.store, "vm-1")],
      ["z", 8n],
      "the failover's placement stands while it runs",
    );
    assert.deepEqual(
      (await w.inv.conflicts()).map((c) => c.id),
      ["vm-1"],
      "a's copy shows as a stale one",
    );
    // The failover ended without reaching z: the lock is gone, and a's copy is the only one.
    await w.store.delete(`${MIGRATION_LOCKS}vm-1`);
    await w.report("z", []);
    await w.report("a", ["vm-1", "vm-2"], VmState.STOPPED);
    const stale = (await w.record())?.staleCopies.map((c) => c.nodeId);
    assert.deepEqual(stale, ["a"], "still known stale: placement from the truth takes it back");
    await w.store.close();
  });
});
