import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { createManualClock, silentLogger } from "../core/index.js";
import { NodeRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
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
});
