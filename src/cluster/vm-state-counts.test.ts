import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { createManualClock, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory, type Inventory } from "./inventory.js";
import { placementChange, readPlacement } from "./vm-placement.js";

const NODES = ["node-a", "node-b", "node-c"];
const VMS = ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5"];
const STATES = [VmState.RUNNING, VmState.STOPPED, VmState.PAUSED, VmState.CRASHED];

/**
 * A step: a node reports these VMs (an id may repeat: nothing in a report
 * forbids it), its record is removed, or a VM's placement moves without its
 * nodes' reports changing (as a failover's or migration's commit does; the
 * dead source never reports again).
 */
const step = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      node: fc.constantFrom(...NODES),
      /** Received in the same millisecond as the report before. */
      tie: fc.boolean(),
      vms: fc.array(fc.record({ id: fc.constantFrom(...VMS), state: fc.constantFrom(...STATES) }), {
        maxLength: 4,
      }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ remove: fc.constantFrom(...NODES) }) },
  {
    weight: 2,
    arbitrary: fc.record({ place: fc.constantFrom(...VMS), on: fc.constantFrom(...NODES) }),
  },
  // A VM's record deleted (a delete finished) while reports may still list it.
  { weight: 1, arbitrary: fc.record({ forget: fc.constantFrom(...VMS) }) },
);

/** Counting listVms by state: what the counts must always equal. */
async function listed(inv: Inventory): Promise<Map<VmState, number>> {
  const out = new Map<VmState, number>();
  for (const vm of await inv.listVms()) out.set(vm.state, (out.get(vm.state) ?? 0) + 1);
  return out;
}

/** How long a change may take to come through the store's watch on a loaded machine. */
const WATCH_PATIENCE_MS = 10_000;

/** Waits (up to WATCH_PATIENCE_MS) until `done` answers true. */
async function until(done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WATCH_PATIENCE_MS;
  while (!(await done())) {
    assert.ok(Date.now() < deadline, `not seen in ${WATCH_PATIENCE_MS} ms`);
    await sleep(20);
  }
}

const sorted = (m: ReadonlyMap<VmState, number>) => [...m].sort((a, b) => a[0] - b[0]);

describe("vmsByState", () => {
  it("equals listVms counted by state after every report, removal, placement moved and VM record deleted: in the process that wrote, one started later, and one following the store", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
        const dir = mkdtempSync(join(tmpdir(), "dv-vm-states-"));
        const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
        const clock = createManualClock(1_000_000);
        const inv = createInventory({ store, clock });
        const other = createInventory({ store, clock });
        try {
          await other.vmsByState();
          let seconds = 1n;
          for (const s of steps) {
            if ("remove" in s) {
              const got = await inv.readNode(s.remove);
              if (got !== undefined) await inv.remove(s.remove, got.unchanged);
            } else if ("forget" in s) {
              await store.delete(`vms/${s.forget}`);
              await until(async () => (await inv.vmRecords.all()).get(s.forget) === undefined);
            } else if ("place" in s) {
              const read = await readPlacement(store, s.place);
              if (read.rec !== undefined) {
                const c = placementChange(s.place, read, s.on);
                await store.txn({ compares: [c.compare], success: [c.op] });
                // Seen through the store's watch, as another process's write.
                await until(
                  async () => (await inv.vmRecords.all()).get(s.place)?.rec.nodeId === s.on,
                );
              }
            } else {
              // Each report a second after the one before, unless it ties with it.
              if (!s.tie) clock.advance(1000);
              await inv.register(create(NodeInfoSchema, { id: { id: s.node } }), "owner");
              await inv.heartbeat(
                create(HealthSchema, {
                  nodeId: { id: s.node },
                  timestamp: { seconds: seconds++, nanos: 0 },
                  vms: s.vms.map((v) =>
                    create(VmInfoSchema, { id: v.id, name: v.id, state: v.state }),
                  ),
                }),
              );
            }
            assert.deepEqual(sorted(await inv.vmsByState()), sorted(await listed(inv)));
          }
          // A process started now loads the same; another running all along sees it through the watch.
          const want = sorted(await listed(inv));
          const late = createInventory({ store, clock });
          assert.deepEqual(sorted(await late.vmsByState()), want);
          late.close();
          for (const deadline = Date.now() + WATCH_PATIENCE_MS; ; ) {
            const got = sorted(await other.vmsByState());
            if (JSON.stringify(got) === JSON.stringify(want)) break;
            assert.ok(
              Date.now() < deadline,
              `the other process's counts ${JSON.stringify(got)} never became ${JSON.stringify(want)}`,
            );
            await sleep(20);
          }
        } finally {
          inv.close();
          other.close();
          await store.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      {
        numRuns: 200,
        examples: [
          // A failover from a node that never reports again: its last report still lists the VM.
          [
            [
              { node: "node-a", tie: false, vms: [{ id: "vm-1", state: VmState.RUNNING }] },
              { place: "vm-1", on: "node-b" },
              { node: "node-b", tie: false, vms: [{ id: "vm-1", state: VmState.RUNNING }] },
            ],
          ],
          // The placement moves back with no report after it: the count follows the placement.
          [
            [
              { node: "node-a", tie: false, vms: [{ id: "vm-1", state: VmState.RUNNING }] },
              { place: "vm-1", on: "node-b" },
              { node: "node-b", tie: false, vms: [{ id: "vm-1", state: VmState.STOPPED }] },
              { place: "vm-1", on: "node-a" },
            ],
          ],
          // Two copies received in the same millisecond, their nodes registered in the other
          // order, then placed on a node that lists neither (found by the second review).
          [
            [
              { node: "node-b", tie: false, vms: [] },
              { node: "node-a", tie: true, vms: [{ id: "vm-1", state: VmState.RUNNING }] },
              { place: "vm-1", on: "node-b" },
              { node: "node-b", tie: true, vms: [{ id: "vm-1", state: VmState.STOPPED }] },
              { place: "vm-1", on: "node-c" },
            ],
          ],
          // One report naming a VM twice.
          [
            [
              {
                node: "node-a",
                tie: false,
                vms: [
                  { id: "vm-1", state: VmState.RUNNING },
                  { id: "vm-1", state: VmState.STOPPED },
                ],
              },
            ],
          ],
        ],
      },
    );
  });
});
