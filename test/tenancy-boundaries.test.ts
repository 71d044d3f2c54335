// Tenant boundaries an adversarial review (7 December 2026) found open, each
// against a dev daemon: every case failed before its fix (docs/security.md).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { enrollAgent } from "./helpers/agent-process.js";
import {
  type DaemonProcess,
  HVCTL_BIN,
  runProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { agentContext, bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";

const GIB = 1024n ** 3n;
const nowS = () => BigInt(Math.floor(Date.now() / 1000));

describe("tenant boundaries against a dev daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clients>;
  const hvctl = (...args: string[]) =>
    runProcess(process.execPath, [HVCTL_BIN, "--config", join(dir, "hvctl.yaml"), ...args]);
  const asTenant = async (principal: string, roles: string[], tenant: string) => {
    await root.access.setBinding({ principal, roles, tenant });
    const key = await root.access.createApiKey({ principal, roles, tenant });
    return clients(bearerContext(admin, key.token));
  };

  /** Node `id` enrolled (its agent not running) and registered, calling as that node. */
  const enrolledNode = async (id: string) => {
    const node = clients(
      agentContext(admin, await enrollAgent(hvctl, daemon.grpcAddress, dir, id)),
    );
    await node.nodes.registerNode({
      id: { id },
      hostname: `${id}.example`,
      capacity: { cpuCores: 16, memoryBytes: 64n * GIB },
    });
    return node;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-tenancy-review-"));
    daemon = await startDevDaemon(dir, {
      cluster: { failover: { enabled: false } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clients(admin);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("shows the new owner of a VM none of the old tenant's replication jobs, in WatchReplicationJobs and ListDatasets as in ListReplicationJobs", async () => {
    const acme = await asTenant("acme-op", ["operator"], "acme");
    const globex = await asTenant("globex-op", ["operator"], "globex");
    await acme.storage.planZfsReplication({
      jobId: "acme-secret-offsite",
      dataset: { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-005-disk0" },
      source: { nodeId: { id: "node-02" } },
      target: { nodeId: { id: "node-01" } },
      policy: "interval=15m",
    });
    await root.vms.setVmTenant({ vmId: "vm-005", tenant: "globex" });
    const listed = (await globex.storage.listReplicationJobs({})).jobs.map((j) => j.jobId);
    assert.ok(
      listed.every((id) => !id.includes("acme")),
      `List hides it: ${JSON.stringify(listed)}`,
    );
    // The watch's first listing, within 3 s.
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 3000);
    const watched: { id: string; createdBy: string }[] = [];
    try {
      for await (const e of globex.watch.watchReplicationJobs({}, { signal: stop.signal }))
        if (e.job !== undefined) watched.push({ id: e.job.jobId, createdBy: e.job.createdBy });
    } catch {
      // cancelled
    } finally {
      clearTimeout(timer);
    }
    const ds = (await globex.storage.listDatasets({})).datasets.find(
      (d) => d.dataset?.name === "vm-005-disk0",
    );
    const inDatasets = (ds?.replications ?? []).map((r) => r.jobId);
    assert.deepEqual(
      {
        watch: watched.filter((w) => w.id.includes("acme")),
        datasets: inDatasets.filter((id) => id.includes("acme")),
      },
      { watch: [], datasets: [] },
      "globex is shown acme's job (its id and its creator) that ListReplicationJobs hides",
    );
  });

  it("lists a disk a stolen node certificate adds to acme's VM to neither tenant (contested: cluster-wide callers only), as authorization treats it", async () => {
    const acme = await asTenant("acme-op2", ["operator"], "acme");
    const globex = await asTenant("globex-op2", ["operator"], "globex");
    const globexDisk = "vm-004-disk0"; // rbd/vm-004-disk0, globex's vm-004
    const before = (await globex.storage.listDatasets({})).datasets.map((d) => d.dataset?.name);
    assert.ok(before.includes(globexDisk), "globex lists its disk at first");
    // A node whose certificate is stolen; its agent is not running.
    const thief = await enrolledNode("node-08");
    await thief.nodes.heartbeat({ nodeId: { id: "node-08" }, timestamp: { seconds: nowS() } });
    // acme creates a VM that lands on the thief's node (here: asked for; placement may pick it too).
    await acme.vms.createVm({
      vmId: "vm-100",
      nodeId: { id: "node-08" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    // The thief reports acme's VM with globex's RBD disk added.
    await thief.nodes.heartbeat({
      nodeId: { id: "node-08" },
      timestamp: { seconds: nowS() },
      vms: [
        {
          id: "vm-100",
          name: "vm-100",
          state: VmState.RUNNING,
          vcpus: 1,
          memoryBytes: GIB,
          disks: [{ backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: globexDisk }],
        },
      ],
    });
    const disk = { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: globexDisk };
    // Authorization treats the disk as contested (cluster-wide callers only), as documented:
    const snap = await callOutcome(acme.storage.listSnapshots({ dataset: disk }));
    assert.equal(snap.reason, "DATASET_NOT_FOUND", "contested: acme may not address it");
    // ...but the lists do not:
    const acmeDatasets = (await acme.storage.listDatasets({})).datasets
      .filter((d) => d.dataset?.name === globexDisk)
      .map((d) => ({ tenant: d.tenant, size: String(d.sizeBytes), snapshots: d.snapshotCount }));
    const acmeImages = (await acme.storage.listImages({})).images
      .filter((i) => i.image?.name === globexDisk)
      .map((i) => ({ tenant: i.tenant, snapshots: i.snapshotCount }));
    const globexNow = (await globex.storage.listDatasets({})).datasets.map((d) => d.dataset?.name);
    const clusterWide = (await root.storage.listDatasets({})).datasets
      .filter((d) => d.dataset?.name === globexDisk)
      .map((d) => d.tenant);
    assert.deepEqual(
      {
        acmeDatasets,
        acmeImages,
        globexStillLists: globexNow.includes(globexDisk),
        clusterWide,
      },
      { acmeDatasets: [], acmeImages: [], globexStillLists: false, clusterWide: [""] },
      "a contested disk is listed to one claimant (the last VM in the list) with globex's size and snapshots",
    );
  });

  it("answers a principal holding a cluster-wide role that lists nothing (monitor) and a tenant role about another tenant's VM and dataset exactly as about missing ones", async () => {
    await root.access.setBinding({ principal: "mon-op", roles: ["monitor"] });
    await root.access.setBinding({ principal: "mon-op", roles: ["operator"], tenant: "acme" });
    const key = await root.access.createApiKey({ principal: "mon-op", roles: ["monitor"] });
    const m = clients(bearerContext(admin, key.token));
    // It cannot list globex's VMs (monitor has no vm:list; acme's operator role is acme's).
    const seen = (await m.vms.listVms({})).vms.map((v) => v.tenant);
    assert.ok(
      seen.every((t) => t === "acme"),
      `sees only acme's VMs: ${JSON.stringify([...new Set(seen)])}`,
    );
    const zfs = (name: string) => ({ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name });
    const probe = {
      vmOfGlobex: (await callOutcome(m.vms.getVm({ vmId: "vm-004" }))).reason,
      vmMissing: (await callOutcome(m.vms.getVm({ vmId: "vm-nope" }))).reason,
      diskOfGlobex: (await callOutcome(m.storage.listSnapshots({ dataset: zfs("vm-008-disk0") })))
        .reason,
      diskMissing: (await callOutcome(m.storage.listSnapshots({ dataset: zfs("nope-disk0") })))
        .reason,
    };
    assert.deepEqual(
      probe,
      {
        vmOfGlobex: "VM_NOT_FOUND",
        vmMissing: "VM_NOT_FOUND",
        diskOfGlobex: "DATASET_NOT_FOUND",
        diskMissing: "DATASET_NOT_FOUND",
      },
      "hidden must answer exactly like missing",
    );
  });

  it("refuses CreateVm over another tenant's unmanaged VM that no node reports for the moment (VM_EXISTS): the VM, its labels and its disk stay the owner's", async () => {
    const acme = await asTenant("acme-op5", ["operator"], "acme");
    const globex = await asTenant("globex-op5", ["operator"], "globex");
    // node-09: any enrolled node (its agent not running); it reports globex's unmanaged VM.
    const node = await enrolledNode("node-09");
    const disk = { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "legacy-1-disk0" };
    const report = (withVm: boolean) =>
      node.nodes.heartbeat({
        nodeId: { id: "node-09" },
        timestamp: { seconds: nowS() },
        vms: withVm
          ? [
              {
                id: "legacy-1",
                name: "legacy-1",
                state: VmState.RUNNING,
                vcpus: 1,
                memoryBytes: GIB,
                disks: [disk],
              },
            ]
          : [],
      });
    await report(true);
    await root.vms.setVmTenant({ vmId: "legacy-1", tenant: "globex" });
    await globex.vms.setVmLabels({ vmId: "legacy-1", set: { owner: "globex-payroll" } });
    const listedBy = async (c: ReturnType<typeof clients>) =>
      (await c.storage.listDatasets({})).datasets
        .filter((d) => d.dataset?.name === disk.name)
        .map((d) => `${d.tenant}:${d.vmId}`);
    assert.deepEqual(await listedBy(globex), ["globex:legacy-1"], "globex's disk at first");
    // A report without it (shut off and undefined for a moment, moved by hand, its node
    // taken out of the inventory...): the VM's record, tenant globex, stays.
    await new Promise((r) => setTimeout(r, 1100));
    await report(false);
    const created = await callOutcome(
      acme.vms.createVm({
        vmId: "legacy-1",
        nodeId: { id: "node-09" },
        spec: { vcpus: 1, memoryBytes: GIB },
      }),
    );
    // The VM comes back in node-09's report.
    await new Promise((r) => setTimeout(r, 1100));
    await report(true);
    const acmeView = await acme.vms.getVm({ vmId: "legacy-1" }).catch(() => undefined);
    const result = {
      created: created.reason || "OK",
      acmeSeesLabels: acmeView?.labels ?? {},
      acmeSeesDisks: (acmeView?.disks ?? []).map((d) => d.name),
      acmeListsGlobexDisk: await listedBy(acme),
      globexStillHasIt: (await callOutcome(globex.vms.getVm({ vmId: "legacy-1" }))).reason || "OK",
    };
    assert.deepEqual(
      result,
      {
        created: "VM_EXISTS",
        acmeSeesLabels: {},
        acmeSeesDisks: [],
        acmeListsGlobexDisk: [],
        globexStillHasIt: "OK",
      },
      "acme took over globex's VM record, then globex's VM and disk",
    );
  });
});
