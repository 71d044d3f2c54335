import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { createEventTenants, createInventory, scopedJobId } from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import { ReplicationJobRecordSchema } from "../src/gen/debvisor/store/v1/storage_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend, ZfsReplicationPlanSchema } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmInfoSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../src/store/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";

/**
 * Replication job ids per tenant (`<tenant>:<id>`): cluster-wide callers
 * list the full stored ids and must be able to address them (JobRef and
 * WatchReplicationRequest took no ':' before). Once the VM whose disk a
 * tenant's job replicates is given to another tenant, the job is neither
 * acme's (the disk is no longer its) nor shown to globex under acme's name;
 * a cluster admin deletes it. Found by an adversarial review.
 */
describe("tenant-scoped replication job ids for cluster-wide callers and after a VM moves", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clients>;
  const asTenant = async (principal: string, tenant: string) => {
    await root.access.setBinding({ principal, roles: ["operator"], tenant });
    const key = await root.access.createApiKey({ principal, roles: ["operator"], tenant });
    return clients(bearerContext(admin, key.token));
  };
  const disk = { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-005-disk0" };
  const plan = (jobId: string, target = "node-01") => ({
    jobId,
    dataset: disk,
    source: { nodeId: { id: "node-02" } },
    target: { nodeId: { id: target } },
    policy: "interval=15m",
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-jobids-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clients(admin);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("a cluster admin can get and delete a tenant's job by the id it lists", async () => {
    const acme = await asTenant("acme-op", "acme");
    await acme.storage.planZfsReplication(plan("acme-del"));
    const listed = (await root.storage.listReplicationJobs({})).jobs.find((j) =>
      j.jobId.endsWith("acme-del"),
    );
    assert.ok(listed, "the cluster admin lists acme's job");
    const got = await callOutcome(root.storage.getReplicationStatus({ jobId: listed.jobId }));
    const deleted = await callOutcome(root.storage.deleteReplicationJob({ jobId: listed.jobId }));
    // acme can still remove it (its dataset is its own): the next test plans to the same node.
    if (deleted.code !== 0) await acme.storage.deleteReplicationJob({ jobId: "acme-del" });
    assert.deepEqual(
      { got, deleted },
      { got: { code: 0, reason: "" }, deleted: { code: 0, reason: "" } },
      `the cluster admin lists ${listed.jobId} and cannot address it`,
    );
  });

  it("after acme's VM is given to globex, acme's job on its disk is neither stuck nor shown under acme's name", async () => {
    const acme = await asTenant("acme-op2", "acme");
    const globex = await asTenant("globex-op", "globex");
    await acme.storage.planZfsReplication(plan("acme-move"));
    // The cluster admin gives vm-005 (and so its disk) to globex.
    await root.vms.setVmTenant({ vmId: "vm-005", tenant: "globex" });
    const acmeSees = (await acme.storage.listReplicationJobs({})).jobs
      .map((j) => j.jobId)
      .filter((id) => id.endsWith("acme-move"));
    const globexSees = (await globex.storage.listReplicationJobs({})).jobs.map((j) => j.jobId);
    const rootSees = (await root.storage.listReplicationJobs({})).jobs
      .map((j) => j.jobId)
      .filter((id) => id.endsWith("acme-move"));
    assert.deepEqual(acmeSees, [], "acme no longer sees globex's disk nor its jobs");
    // Whoever may see the job must be able to stop it.
    const stoppable: Record<string, { code: number; reason: string }> = {};
    for (const id of globexSees.filter((i) => i.endsWith("acme-move")))
      stoppable[`globex:${id}`] = await callOutcome(
        globex.storage.deleteReplicationJob({ jobId: id }),
      );
    for (const id of rootSees)
      stoppable[`root:${id}`] = await callOutcome(root.storage.deleteReplicationJob({ jobId: id }));
    assert.ok(
      Object.values(stoppable).some((o) => o.code === 0),
      `the job still replicating globex's disk to acme's chosen node (globex lists ${JSON.stringify(
        globexSees,
      )}) can be deleted by nobody: ${JSON.stringify(stoppable)}`,
    );
    assert.ok(
      globexSees.every((id) => !id.includes("acme")),
      `globex is shown another tenant's name and job: ${JSON.stringify(globexSees)}`,
    );
  });
});

/**
 * The same move, at the event recorder: a replication run's events are
 * filed under the dataset's owner while the job is in that owner's space.
 * After acme's VM (and disk) is given to globex, a run of acme's old job
 * over globex's disk (sizes sent, errors, snapshot names) is not acme's to
 * read, nor globex's (it named acme's job and tenant to globex: a review in
 * December): the cluster admin's, who leaves the job running or deletes it.
 */
describe("events of a tenant's job on a disk that moved to another tenant", () => {
  it("are the cluster's once the disk moved: not the tenant's the job id names, nor the disk's new owner's", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-jobevents-")), "s.db"),
      logger: silentLogger,
    });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock });
    try {
      const disk = { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" };
      await inventory.register(create(NodeInfoSchema, { id: { id: "node-a" } }), "o");
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "node-a" },
          timestamp: { seconds: 1000n, nanos: 0 },
          vms: [
            create(VmInfoSchema, {
              id: "vm-1",
              name: "vm-1",
              state: VmState.RUNNING,
              disks: [disk],
            }),
          ],
        }),
      );
      await inventory.assignTenant("vm-1", "acme", "admin");
      const jobId = scopedJobId("acme", "nightly");
      await store.put(
        `replication/jobs/${jobId}`,
        encodeMessage(
          ReplicationJobRecordSchema,
          create(ReplicationJobRecordSchema, {
            jobId,
            plan: create(ZfsReplicationPlanSchema, { jobId, dataset: disk }),
          }),
        ),
      );
      const tenantOf = createEventTenants({ inventory, store });
      assert.equal(await tenantOf("replication", jobId, AbortSignal.timeout(5000)), "acme");
      // The cluster admin gives vm-1, and so its disk, to globex.
      await inventory.assignTenant("vm-1", "globex", "admin");
      assert.equal(
        await tenantOf("replication", jobId, AbortSignal.timeout(5000)),
        "",
        "a run of acme's job over globex's disk is neither's: acme no longer owns the disk, and globex is not shown acme's job",
      );
    } finally {
      inventory.close();
      await store.close();
    }
  });
});
