import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  type ClusterHarness,
  engineOn,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { eventually } from "../../test/helpers/eventually.js";
import { RpcError } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { HealthSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage } from "../store/index.js";
import { createMigrationJournal } from "./migration-journal.js";
import { readPlacement } from "./vm-placement.js";

const request = (vmId: string, target?: string) => ({
  vmId,
  target,
  allowDowntime: true,
  kind: MigrationKind.MIGRATE,
  requestedBy: "test-operator",
  tenant: undefined,
});

/**
 * Two nodes; node-02's reports carry a copy of one of node-01's VMs while
 * `copy` is set (a stale copy: an earlier failover's, say). Settling a
 * migration whose runner died takes a copy on the target for the VM arrived
 * (migration-settle's arrivedUnseen), so a migration must never begin onto
 * a node that holds one: settling could then take the old copy for the
 * moved VM.
 */
describe("a migration onto a node holding a stale copy of its vm", () => {
  let h: ClusterHarness;
  let copy: VmInfo | undefined;
  afterEach(() => h.close());

  async function start() {
    copy = undefined;
    h = await startClusterHarness({
      nodes: 2,
      vmsPerNode: 3,
      report: (nodeId, health) =>
        nodeId === "node-02" && copy !== undefined
          ? create(HealthSchema, {
              ...health,
              vms: [
                ...health.vms,
                create(VmInfoSchema, {
                  id: copy.id,
                  vcpus: copy.vcpus,
                  memoryBytes: copy.memoryBytes,
                  state: VmState.STOPPED,
                  nodeId: { id: nodeId },
                }),
              ],
            })
          : health,
    });
    const vm = (await h.inventory.getNode("node-01"))?.vms[0];
    assert.ok(vm);
    return vm;
  }
  const staleOn = async (vmId: string) =>
    (await h.inventory.findVm(vmId))?.staleCopyNodes.join(",") ?? "";

  it("is refused while the copy is there, whether asked for or picked, and goes ahead once it is gone", async () => {
    const vm = await start();
    copy = vm;
    await h.beat();
    assert.equal(await staleOn(vm.id), "node-02", "the copy is recorded as stale");
    await assert.rejects(h.runtime.engine.start(request(vm.id, "node-02")), (err: RpcError) => {
      assert.equal(err.reason, "MIGRATION_NOT_ALLOWED");
      assert.match(
        err.message,
        /node-02 holds a stale copy of the vm; it can be the target once the copy is gone/,
      );
      return true;
    });
    await assert.rejects(h.runtime.engine.start(request(vm.id)), (err: RpcError) => {
      assert.equal(err.reason, "NO_TARGET");
      assert.match(err.message, /stale copy/);
      return true;
    });
    assert.equal(h.sim.locate(vm.id)?.nodeId, "node-01", "nothing moved");

    // Its removal sent (and failed, say): still refused. Settling would not take that copy for
    // the VM, but it would keep the arrived VM out of the target's report (a conflict), and a
    // migration whose runner died after the hand-over would find the VM on neither node.
    const placed = await readPlacement(h.store, vm.id);
    assert.ok(placed.rec);
    const marked = create(VmRecordSchema, {
      ...placed.rec,
      staleCopies: placed.rec.staleCopies.map((c) => ({ ...c, cleanupSent: true })),
    });
    await h.store.put(`vms/${vm.id}`, encodeMessage(VmRecordSchema, marked));
    await eventually(async () =>
      assert.equal(
        (await h.inventory.vmRecords.all()).get(vm.id)?.rec.staleCopies[0]?.cleanupSent,
        true,
      ),
    );
    await assert.rejects(h.runtime.engine.start(request(vm.id, "node-02")), (err: RpcError) => {
      assert.equal(err.reason, "MIGRATION_NOT_ALLOWED");
      return true;
    });

    copy = undefined;
    await h.beat();
    assert.equal(await staleOn(vm.id), "", "the copy is gone");
    const started = await h.runtime.engine.start(request(vm.id, "node-02"));
    const done = await h.runtime.engine.wait(started.migrationId, AbortSignal.timeout(10_000));
    assert.equal(done.state, MigrationState.SUCCEEDED, done.message);
  });

  it("is refused when the copy is noted between planning and beginning (the record is compared)", async () => {
    const vm = await start();
    let noted = false;
    const { engine, records } = engineOn(h, (id) => h.sim.driver(id), {
      journal: (records) => {
        const real = createMigrationJournal({ records, runnerId: "me", clock: h.clock });
        return {
          ...real,
          async begin(...args) {
            if (!noted) {
              // The planner has read the VM with no stale copy; node-02 now reports one.
              noted = true;
              copy = vm;
              await h.beat();
            }
            return real.begin(...args);
          },
        };
      },
    });
    try {
      await assert.rejects(engine.start(request(vm.id, "node-02")), (err: RpcError) => {
        assert.ok(err instanceof RpcError, String(err));
        assert.equal(err.reason, "MIGRATION_NOT_ALLOWED");
        return true;
      });
      assert.ok(noted);
      assert.equal(await records.locked(vm.id), false, "no migration was begun");
      await eventually(async () => assert.equal(h.sim.locate(vm.id)?.nodeId, "node-01"));
    } finally {
      await engine.close();
    }
  });
});
