import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { createManualClock, silentLogger } from "../core/index.js";
import { NodeRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../store/index.js";
import { createInventory } from "./inventory.js";

const NODES = ["n1", "n2", "n3", "n4"];
const VMS = ["vm-a", "vm-b", "vm-c"];
const DISKS = ["disk-1", "disk-2", "disk-3"];

/** What the store may hold: node reports (several may list one VM) and the control plane's VM records. */
const world = fc.record({
  reports: fc.array(
    fc.record({
      node: fc.constantFrom(...NODES),
      // Few distinct times, so equal report times (ties) come up.
      receivedAtMs: fc.integer({ min: 1, max: 4 }),
      vms: fc.array(
        fc.record({
          id: fc.constantFrom(...VMS),
          state: fc.constantFrom(VmState.RUNNING, VmState.STOPPED),
          tenant: fc.constantFrom("", "evil"),
          disks: fc.subarray(DISKS, { maxLength: 2 }),
        }),
        { maxLength: 4 },
      ),
    }),
    { maxLength: 4 },
  ),
  facts: fc.array(
    fc.record({
      id: fc.constantFrom(...VMS),
      node: fc.constantFrom("", ...NODES),
      tenant: fc.constantFrom("", "acme"),
      stale: fc.subarray(NODES, { maxLength: 2 }),
    }),
    { maxLength: 3 },
  ),
});

describe("inventory: finding one VM, the VMs with a disk, or one node", () => {
  it("answers exactly what listing every VM or node shows (filtered), or none when it lists none", async () => {
    await fc.assert(
      fc.asyncProperty(world, async ({ reports, facts }) => {
        const dir = mkdtempSync(join(tmpdir(), "dv-inv-find-"));
        const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
        try {
          for (const r of reports) {
            const rec = create(NodeRecordSchema, {
              info: { id: { id: r.node } },
              receivedAtMs: BigInt(r.receivedAtMs),
              health: {
                nodeId: { id: r.node },
                vms: r.vms.map((v) => ({
                  ...v,
                  name: v.id,
                  nodeId: { id: r.node },
                  disks: v.disks.map((name) => ({
                    backend: StorageBackend.BACKEND_ZFS,
                    pool: "tank",
                    name,
                  })),
                })),
              },
            });
            await store.put(`nodes/${r.node}`, encodeMessage(NodeRecordSchema, rec));
          }
          for (const f of facts) {
            const rec = create(VmRecordSchema, {
              id: f.id,
              nodeId: f.node,
              tenant: f.tenant,
              staleCopies: f.stale.map((nodeId) => ({ nodeId })),
            });
            await store.put(`vms/${f.id}`, encodeMessage(VmRecordSchema, rec));
          }
          const inv = createInventory({ store, clock: createManualClock(1_000_000) });
          try {
            const listed = await inv.listVms();
            for (const id of [...VMS, "vm-none"])
              assert.deepEqual(
                await inv.findVm(id),
                listed.find((v) => v.id === id),
                id,
              );
            for (const disk of [...DISKS, "disk-none"]) {
              const has = (v: VmInfo) => v.disks.some((d) => d.name === disk);
              assert.deepEqual(
                await inv.vmsWithDisk((d) => d.name === disk),
                listed.filter(has),
                disk,
              );
            }
            const nodes = await inv.listNodes();
            for (const id of [...NODES, "n-none"]) {
              const one = await inv.getNode(id);
              const all = nodes.find((n) => n.info?.id?.id === id);
              assert.deepEqual(one?.summary, all, id);
              if (all !== undefined) assert.deepEqual(one?.vms, all.health?.vms ?? [], id);
            }
          } finally {
            inv.close();
          }
        } finally {
          await store.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 150 },
    );
  });

  it("shows this process's own writes and removals at once, while its watch of the store lags", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-inv-find-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const { store, gate } = holdableStore(real);
    const inv = createInventory({ store, clock: createManualClock(1_000_000) });
    const beat = (at: number, vms: string[]) =>
      inv.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "n1" },
          timestamp: { seconds: BigInt(at) },
          vms: vms.map((id) => ({
            id,
            nodeId: { id: "n1" },
            disks: [{ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: `${id}-disk` }],
          })),
        }),
      );
    /** What every lookup shows, each checked against the listing. */
    const shown = async () => {
      const listed = await inv.listVms();
      for (const id of ["vm-a", "vm-b", "vm-c"]) {
        assert.deepEqual(
          await inv.findVm(id),
          listed.find((v) => v.id === id),
          id,
        );
        const disk = `${id}-disk`;
        assert.deepEqual(
          await inv.vmsWithDisk((d) => d.name === disk),
          listed.filter((v) => v.disks.some((d) => d.name === disk)),
          disk,
        );
      }
      const nodes = await inv.listNodes();
      const one = await inv.getNode("n1");
      assert.deepEqual(one?.summary, nodes[0]);
      return { vms: listed.map((v) => v.id), node: one?.vms.map((v) => v.id) };
    };
    try {
      await inv.register(create(NodeInfoSchema, { id: { id: "n1" } }), "ops");
      await beat(1, ["vm-a"]);
      // Another process's write, seen only through the watch: once it shows, so has ours.
      await real.put(
        "nodes/sentinel",
        encodeMessage(NodeRecordSchema, create(NodeRecordSchema, { info: { id: { id: "zz" } } })),
      );
      for (let i = 0; i < 500 && (await inv.listNodes()).length < 2; i++) await sleep(10);
      await real.delete("nodes/sentinel");
      for (let i = 0; i < 500 && (await inv.listNodes()).length > 1; i++) await sleep(10);
      assert.deepEqual(await shown(), { vms: ["vm-a"], node: ["vm-a"] });

      gate.hold();
      await beat(2, ["vm-b"]);
      assert.deepEqual(await shown(), { vms: ["vm-b"], node: ["vm-b"] }, "its newer write");
      const read = await inv.readNode("n1");
      assert.ok(read !== undefined);
      assert.equal(await inv.remove("n1", read.unchanged), true);
      assert.deepEqual(await shown(), { vms: [], node: undefined }, "removed");
      await inv.register(create(NodeInfoSchema, { id: { id: "n1" } }), "ops");
      await beat(3, ["vm-c"]);
      assert.deepEqual(await shown(), { vms: ["vm-c"], node: ["vm-c"] }, "written again");

      gate.release();
      await sleep(200);
      assert.deepEqual(
        await shown(),
        { vms: ["vm-c"], node: ["vm-c"] },
        "once the watch caught up",
      );
    } finally {
      gate.release();
      inv.close();
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The store, with its watch of node records held on demand: the inventory's copy then lags, as behind a slow watch. */
function holdableStore(real: KvStore) {
  let opened: Promise<void> = Promise.resolve();
  let open = () => {};
  const gate = {
    hold() {
      opened = new Promise((resolve) => {
        open = resolve;
      });
    },
    release() {
      open();
    },
  };
  const store: KvStore = Object.create(real);
  store.watch = (prefix, from, options) => {
    const inner = real.watch(prefix, from, options);
    if (prefix !== "nodes/") return inner;
    return (async function* () {
      for await (const e of inner) {
        await opened;
        yield e;
      }
    })();
  };
  return { store, gate };
}
