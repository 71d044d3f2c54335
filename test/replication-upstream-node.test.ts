// A node on the upstream contract reports a VM with a ZFS disk without
// vm.node_id, or with it in another case: where the VM runs is the node whose
// report holds it. Its owner plans replication from that node and runs it.
// Found by a review (the plan was refused "runs on , not on n1", and the job
// "followed" its VM from n1 to N1).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ReplicationState } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { failure, START, startReplicationWorld, zfs } from "./helpers/storage-world.js";

const n = (id: string) => ({ nodeId: { id } });

for (const variant of [
  { name: "vm reported without node_id", src: "n1", vmNode: undefined as string | undefined },
  { name: "vm.node_id differing in case from the plan's source", src: "n1", vmNode: "N1" },
]) {
  describe(`replication from an upstream-contract node: ${variant.name}`, () => {
    let world: Awaited<ReturnType<typeof startReplicationWorld>>;
    before(async () => {
      world = await startReplicationWorld(["n1", "n2"], [{ disk: "db-1-disk0", node: "n1" }]);
      await world.ops.nodes.heartbeat({
        nodeId: { id: "n1" },
        timestamp: { seconds: BigInt(Math.floor(START / 1000)) },
        vms: [
          {
            id: "db-1",
            ...(variant.vmNode === undefined ? {} : { nodeId: { id: variant.vmNode } }),
            state: VmState.RUNNING,
            disks: [zfs("db-1-disk0")],
          },
        ],
      });
    });
    after(async () => {
      await world.close();
    });

    it("plans from the VM's node and runs n1 -> n2 without re-pointing the job", async () => {
      const f = await failure(
        world.ops.storage.planZfsReplication({
          jobId: "j",
          dataset: zfs("db-1-disk0"),
          source: n(variant.src),
          target: n("n2"),
          policy: "interval=15m",
        }),
      );
      assert.deepEqual(f, {}, "plan refused");
      const run = await world.ops.storage.runZfsReplication({ jobId: "j" });
      assert.equal(
        run.state,
        ReplicationState.REPL_STATE_SUCCESS,
        `${run.lastErrorReason}: ${run.lastError}`,
      );
      assert.equal(run.followed, "", "a job that never moved was re-pointed");
    });
  });
}
