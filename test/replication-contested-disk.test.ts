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
import type * as grpc from "@grpc/grpc-js";
import { createServiceClient } from "../src/client/index.js";
import { createManualClock } from "../src/core/index.js";
import { createSimulatedStorage } from "../src/drivers/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { ReplicationState, StorageService } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmService, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createAccessPolicy } from "../src/security/index.js";
import { testChannel } from "./helpers/grpc-client.js";
import { createTestPki } from "./helpers/pki.js";
import { type SecuredServer, startSecuredServer } from "./helpers/secured-server.js";
import { failure, START, withToken, zfs } from "./helpers/storage-world.js";

const GIB = 1024 ** 3;
const n = (id: string) => ({ nodeId: { id } });

describe("replication of a disk that VMs on two nodes name", () => {
  let server: SecuredServer;
  let sim: ReturnType<typeof createSimulatedStorage>;
  const channels: grpc.Client[] = [];
  let acme: ReturnType<typeof createServiceClient<typeof StorageService>>;
  let operator: ReturnType<typeof createServiceClient<typeof StorageService>>;
  before(async () => {
    const pki = await createTestPki();
    const clock = createManualClock(START);
    const snaps = [{ name: "daily-20261122T000000Z", createdMs: START - 3_600_000 }];
    sim = createSimulatedStorage({
      clock,
      sleep: async (ms) => {
        clock.advance(ms);
      },
      datasets: [
        { dataset: zfs("vm-a1-disk0"), nodeId: "n1", sizeBytes: 8 * GIB, snapshots: snaps },
        { dataset: zfs("vm-a1-disk0"), nodeId: "n3", sizeBytes: 8 * GIB, snapshots: snaps },
      ],
    });
    server = await startSecuredServer({
      pki,
      clock,
      policy: createAccessPolicy({ bindings: [] }),
      storage: sim,
    });
    const ch = testChannel(server.server.address, { caPem: pki.ca.certPem });
    channels.push(ch);
    const key = async (principal: string, roles: string[], tenant?: string) =>
      (await server.apiKeys.create({ principal, roles, tenant, createdBy: "test" })).token;
    const ops = await key("ops", ["operator"]);
    const nodes = withToken(createServiceClient(NodeService, ch), ops);
    for (const id of ["n1", "n2", "n3"])
      await nodes.registerNode({ id: { id }, hostname: `${id}.example` });
    const report = (node: string, vm: string, state: VmState) =>
      nodes.heartbeat({
        nodeId: { id: node },
        timestamp: { seconds: BigInt(Math.floor(START / 1000)) },
        vms: [{ id: vm, nodeId: { id: node }, state, disks: [zfs("vm-a1-disk0")] }],
      });
    await report("n1", "vm-a1", VmState.RUNNING);
    const vms = withToken(createServiceClient(VmService, ch), ops);
    await vms.setVmTenant({ vmId: "vm-a1", tenant: "acme" });
    acme = withToken(
      createServiceClient(StorageService, ch),
      await key("acme-ops", ["operator"], "acme"),
    );
    operator = withToken(createServiceClient(StorageService, ch), ops);
    // Planned while only vm-a1 names the disk: accepted.
    await acme.planZfsReplication({
      jobId: "a1",
      dataset: zfs("vm-a1-disk0"),
      source: n("n1"),
      target: n("n2"),
      policy: "interval=15m",
    });
    await report("n3", "a-standby", VmState.STOPPED);
  });
  after(async () => {
    for (const c of channels) c.close();
    await server.close();
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

  it("refuses the plan from the standby's copy onto the live disk, to acme and to an operator", async () => {
    for (const client of [acme, operator]) {
      const f = await failure(client.planZfsReplication(plan("n3", "n1")));
      assert.notDeepEqual(f, {}, "accepted a plan onto the running VM's disk");
    }
  });

  it("runs nothing of a job planned before: the run fails CONFLICT and n2 gets no copy", async () => {
    const run = await acme.runZfsReplication({ jobId: "a1" });
    assert.equal(run.state, ReplicationState.REPL_STATE_FAILED, run.lastError);
    assert.equal(run.lastErrorReason, "CONFLICT");
    assert.equal(
      await sim.listSnapshots(zfs("vm-a1-disk0"), AbortSignal.timeout(5000), "n2"),
      undefined,
    );
  });
});
