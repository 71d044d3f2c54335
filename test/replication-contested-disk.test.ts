// A disk that VMs on two nodes name (a second report of the name: a stopped
// standby on n3 beside acme's running vm-a1 on n1, which no tenant owns):
// which copy is live is not for replication to guess. A plan is refused
// CONFLICT without naming the other node (acme may not see that VM), a
// plan from the standby's copy onto the live disk is refused, and a job
// planned before the standby appeared does not run. Found by a review: the
// first VM by id decided, so acme's own plan was refused naming n3 and the
// backwards plan was accepted and ran, onto vm-a1's live disk.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ReplicationState } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import {
  failure,
  START,
  type StorageClient,
  startReplicationWorld,
  zfs,
} from "./helpers/storage-world.js";

const n = (id: string) => ({ nodeId: { id } });

describe("replication of a disk that VMs on two nodes name", () => {
  let world: Awaited<ReturnType<typeof startReplicationWorld>>;
  let acme: StorageClient;
  let operator: StorageClient;
  before(async () => {
    world = await startReplicationWorld(
      ["n1", "n2", "n3"],
      [
        { disk: "vm-a1-disk0", node: "n1" },
        { disk: "vm-a1-disk0", node: "n3" },
      ],
    );
    const report = (node: string, vm: string, state: VmState) =>
      world.ops.nodes.heartbeat({
        nodeId: { id: node },
        timestamp: { seconds: BigInt(Math.floor(START / 1000)) },
        vms: [{ id: vm, nodeId: { id: node }, state, disks: [zfs("vm-a1-disk0")] }],
      });
    await report("n1", "vm-a1", VmState.RUNNING);
    await world.ops.vms.setVmTenant({ vmId: "vm-a1", tenant: "acme" });
    acme = (await world.as("acme-ops", ["operator"], "acme")).storage;
    operator = world.ops.storage;
    // Planned while only vm-a1 names the disk: accepted.
    await acme.planZfsReplication({
      jobId: "a1",
      dataset: zfs("vm-a1-disk0"),
      source: n("n1"),
      target: n("n2"),
      policy: "interval=15m",
    });
    await operator.planZfsReplication({
      jobId: "o1",
      dataset: zfs("vm-a1-disk0"),
      source: n("n1"),
      target: n("n3"),
      policy: "interval=15m",
    });
    await report("n3", "a-standby", VmState.STOPPED);
  });
  after(async () => {
    await world.close();
  });

  const plan = (source: string, target: string) => ({
    jobId: `p-${source}-${target}`,
    dataset: zfs("vm-a1-disk0"),
    source: n(source),
    target: n(target),
    policy: "interval=15m",
  });

  it("refuses acme's plan CONFLICT, naming no node of a VM acme may not see", async () => {
    const f = await failure(acme.planZfsReplication(plan("n1", "n2")));
    assert.equal(f.reason, "CONFLICT", f.details);
    assert.doesNotMatch(f.details ?? "", /n3|standby/);
  });

  it("names both VMs and nodes to a cluster-wide operator, who may see them", async () => {
    const f = await failure(operator.planZfsReplication(plan("n1", "n2")));
    assert.equal(f.reason, "CONFLICT");
    assert.match(f.details ?? "", /\(a-standby on n3, vm-a1 on n1\)/);
  });

  it("refuses the plan from the standby's copy onto the live disk, to acme and to an operator", async () => {
    for (const client of [acme, operator]) {
      const f = await failure(client.planZfsReplication(plan("n3", "n1")));
      assert.notDeepEqual(f, {}, "accepted a plan onto the running VM's disk");
    }
  });

  it("lets the operator read and delete a job of the contested disk (the way out)", async () => {
    const status = await operator.getReplicationStatus({ jobId: "o1" });
    assert.equal(status.jobId, "o1");
    await operator.deleteReplicationJob({ jobId: "o1" });
    assert.deepEqual(
      (await operator.listReplicationJobs({})).jobs.map((j) => j.jobId),
      ["acme:a1"],
    );
  });

  it("runs nothing of a job planned before: the run fails CONFLICT and n2 gets no copy", async () => {
    const run = await acme.runZfsReplication({ jobId: "a1" });
    assert.equal(run.state, ReplicationState.REPL_STATE_FAILED, run.lastError);
    assert.equal(run.lastErrorReason, "CONFLICT");
    assert.equal(
      await world.sim.listSnapshots(zfs("vm-a1-disk0"), AbortSignal.timeout(5000), "n2"),
      undefined,
    );
  });
});
