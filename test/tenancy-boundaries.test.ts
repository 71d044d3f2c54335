// Tenant boundaries an adversarial review (7 December 2026) found open, each
// against a dev daemon: every case failed before its fix (docs/security.md).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { EventObjectKind } from "../src/gen/debvisor/v1/event_pb.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  StorageBackend,
} from "../src/gen/debvisor/v1/storage_pb.js";
import { VmOperationState, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { enrollAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { agentContext, bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
const nowS = () => BigInt(Math.floor(Date.now() / 1000));

describe("tenant boundaries against a dev daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clients>;
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const asTenant = async (principal: string, roles: string[], tenant: string) => {
    await root.access.setBinding({ principal, roles, tenant });
    const key = await root.access.createApiKey({ principal, roles, tenant });
    return clients(bearerContext(admin, key.token));
  };

  /**
   * Node `id` enrolled (its agent not running) and registered, calling as that
   * node; `report` heartbeats with these VMs (1 vCPU, 1 GiB each).
   */
  const enrolledNode = async (id: string) => {
    const node = clients(
      agentContext(admin, await enrollAgent(hvctl, daemon.grpcAddress, dir, id)),
    );
    await node.nodes.registerNode({
      id: { id },
      hostname: `${id}.example`,
      capacity: { cpuCores: 16, memoryBytes: 64n * GIB },
    });
    const report = (vms: { id: string; state: VmState; disks?: DatasetRef[] }[]) =>
      node.nodes.heartbeat({
        nodeId: { id },
        timestamp: { seconds: nowS() },
        vms: vms.map((vm) => ({ ...vm, name: vm.id, vcpus: 1, memoryBytes: GIB })),
      });
    return { ...node, report };
  };

  /** A template snapshot `label` of the RBD disk of one of the dev cluster's own VMs (vm-0NN). */
  const templateSnapshot = async (label: string) => {
    const rbdVm = (await root.vms.listVms({})).vms.find(
      (v) => /^vm-0\d\d$/.test(v.id) && v.disks[0]?.backend === StorageBackend.BACKEND_RBD,
    );
    assert.ok(rbdVm?.disks[0] !== undefined, "a VM with an RBD disk");
    return root.storage.createRbdTemplateSnapshot({ image: rbdVm.disks[0], label });
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-tenancy-review-"));
    daemon = await startDevDaemon(dir, {
      cluster: { failover: { enabled: false } },
      // Each case makes its tenants' keys and bindings anew; rate limits are tested elsewhere.
      rateLimit: { perPrincipal: { ratePerSecond: 1000, burst: 1000 } },
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
    const jobsOn = async (c: ReturnType<typeof clients>, tenant = "") =>
      (await c.storage.listDatasets({ tenant })).datasets
        .filter((d) => d.dataset?.name === "vm-005-disk0")
        .flatMap((d) => d.replications.map((r) => r.jobId));
    // A cluster admin leaves it running: a run's events name the job.
    await root.storage.runZfsReplication({ jobId: "acme:acme-secret-offsite" });
    const events = async (c: ReturnType<typeof clients>) =>
      (await c.events.listEvents({ objectKind: EventObjectKind.REPLICATION })).events
        .map((e) => e.objectId)
        .filter((id) => id.includes("acme-secret-offsite"));
    await eventually(async () => (await events(root)).length > 0, { timeoutMs: 20_000 });
    // Bound as a viewer in globex (it lists globex's datasets) and operator elsewhere: it is
    // told of the job exactly as of a missing one.
    await root.access.setBinding({ principal: "multi-1", roles: ["operator"], tenant: "initech" });
    await root.access.setBinding({ principal: "multi-1", roles: ["viewer"], tenant: "globex" });
    const key = await root.access.createApiKey({ principal: "multi-1", roles: ["monitor"] });
    const multi = clients(bearerContext(admin, key.token));
    const status = async (jobId: string) =>
      (await callOutcome(multi.storage.getReplicationStatus({ jobId }))).reason;
    assert.deepEqual(
      {
        watch: watched.filter((w) => w.id.includes("acme")),
        datasets: (await jobsOn(globex)).filter((id) => id.includes("acme")),
        filteredByAdmin: (await jobsOn(root, "globex")).filter((id) => id.includes("acme")),
        events: await events(globex),
        probe: [await status("acme:acme-secret-offsite"), await status("acme:acme-nope")],
      },
      {
        watch: [],
        datasets: [],
        filteredByAdmin: [],
        events: [],
        probe: ["REPLICATION_JOB_NOT_FOUND", "REPLICATION_JOB_NOT_FOUND"],
      },
      "globex is shown acme's job (its id, its creator, its runs) that ListReplicationJobs hides",
    );
    assert.ok((await jobsOn(root)).includes("acme:acme-secret-offsite"), "the cluster's to see");
  });

  it("lists a disk a stolen node certificate adds to acme's VM to neither tenant (contested: cluster-wide callers only), as authorization treats it", async () => {
    const acme = await asTenant("acme-op2", ["operator"], "acme");
    const globex = await asTenant("globex-op2", ["operator"], "globex");
    const globexDisk = "vm-004-disk0"; // rbd/vm-004-disk0, globex's vm-004
    const before = (await globex.storage.listDatasets({})).datasets.map((d) => d.dataset?.name);
    assert.ok(before.includes(globexDisk), "globex lists its disk at first");
    // A node whose certificate is stolen; its agent is not running.
    const thief = await enrolledNode("node-08");
    await thief.report([]);
    // acme creates a VM that lands on the thief's node (here: asked for; placement may pick it too).
    await acme.vms.createVm({
      vmId: "vm-100",
      nodeId: { id: "node-08" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    // The thief reports acme's VM with globex's RBD disk added.
    const stolen = { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: globexDisk };
    await thief.report([
      { id: "vm-100", state: VmState.RUNNING, disks: [create(DatasetRefSchema, stolen)] },
    ]);
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
    const disk = create(DatasetRefSchema, {
      backend: StorageBackend.BACKEND_RBD,
      pool: "rbd",
      name: "legacy-1-disk0",
    });
    const report = (withVm: boolean) =>
      node.report(withVm ? [{ id: "legacy-1", state: VmState.RUNNING, disks: [disk] }] : []);
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

  it("lets a cluster-wide caller, not a tenant, create over the record of a VM no tenant holds that no node lists now", async () => {
    const acme = await asTenant("acme-op6", ["operator"], "acme");
    const node = await enrolledNode("node-06");
    const report = (withVm: boolean) =>
      node.report(withVm ? [{ id: "web-1", state: VmState.STOPPED }] : []);
    await report(true);
    await new Promise((r) => setTimeout(r, 1100));
    await report(false);
    const spec = { vcpus: 1, memoryBytes: GIB };
    const created = async (c: ReturnType<typeof clients>, tenant = "") =>
      (await callOutcome(c.vms.createVm({ vmId: "web-1", tenant, spec }))).reason || "OK";
    assert.deepEqual(
      { acme: await created(acme), clusterForAcme: await created(root, "acme") },
      { acme: "VM_EXISTS", clusterForAcme: "OK" },
    );
  });

  it("shows a tenant's disk with its own VM and node, not those of a VM no tenant holds that a stolen node certificate reports with it", async () => {
    const acme = await asTenant("acme-op7", ["operator"], "acme");
    const victim = (await root.vms.listVms({})).vms.find(
      (v) => v.tenant === "acme" && v.disks.some((d) => d.backend === StorageBackend.BACKEND_ZFS),
    );
    const disk = victim?.disks.find((d) => d.backend === StorageBackend.BACKEND_ZFS);
    assert.ok(victim !== undefined && disk !== undefined, "an acme VM with a ZFS disk");
    const thief = await enrolledNode("node-07");
    await thief.report([{ id: "zz-ghost-1", state: VmState.RUNNING, disks: [disk] }]);
    const listed = (await acme.storage.listDatasets({})).datasets
      .filter((d) => d.dataset?.name === disk.name)
      .map((d) => ({ tenant: d.tenant, vmId: d.vmId, node: d.nodeId?.id ?? "" }));
    assert.deepEqual(listed, [{ tenant: "acme", vmId: victim.id, node: victim.nodeId?.id ?? "" }]);
  });

  it("gives a VM's clone disk to its new tenant with it (SetVmTenant): the new owner lists and uses it", async () => {
    const acme = await asTenant("acme-op8", ["operator"], "acme");
    const globex = await asTenant("globex-op8", ["operator"], "globex");
    const template = await templateSnapshot("golden");
    const image = { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "acme-c1" };
    await root.storage.cloneRbdFromTemplate({
      templateSnapshot: template.snapshot,
      newImage: image,
      tenant: "acme",
    });
    await acme.vms.createVm({
      vmId: "acme-app-1",
      spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: image }] },
    });
    const listedBy = async (c: ReturnType<typeof clients>) =>
      (await c.storage.listDatasets({})).datasets
        .filter((d) => d.dataset?.name === "acme-c1")
        .map((d) => d.tenant);
    assert.deepEqual(await listedBy(acme), ["acme"]);
    await root.vms.setVmTenant({ vmId: "acme-app-1", tenant: "globex" });
    const snapshot = await callOutcome(
      globex.storage.createSnapshot({ dataset: image, label: "mine" }),
    );
    assert.deepEqual(
      {
        globex: await listedBy(globex),
        snapshot: snapshot.reason || "OK",
        acme: await listedBy(acme),
      },
      { globex: ["globex"], snapshot: "OK", acme: [] },
    );
  });

  it("gives away with a VM only the disks its spec names, not clones a stolen node certificate adds to its report; and deletes no image a VM no tenant holds boots from", async () => {
    const acme = await asTenant("acme-op9", ["operator"], "acme");
    const globex = await asTenant("globex-op9", ["operator"], "globex");
    const template = await templateSnapshot("golden2");
    const clone = async (name: string) => {
      const image = create(DatasetRefSchema, {
        backend: StorageBackend.BACKEND_RBD,
        pool: "rbd",
        name,
      });
      await root.storage.cloneRbdFromTemplate({
        templateSnapshot: template.snapshot,
        newImage: image,
        tenant: "acme",
      });
      return image;
    };
    const spare = await clone("acme-c2");
    const booted = await clone("acme-c3");
    // node-08 (stolen, case 2) reports acme's vm-100 with acme's spare clone; then vm-100
    // is given to globex.
    const thief = await enrolledNode("node-08");
    await thief.report([{ id: "vm-100", state: VmState.RUNNING, disks: [spare] }]);
    await root.vms.setVmTenant({ vmId: "vm-100", tenant: "globex" });
    const tenantsOf = async (c: ReturnType<typeof clients>, name: string) =>
      (await c.storage.listDatasets({})).datasets
        .filter((d) => d.dataset?.name === name)
        .map((d) => d.tenant);
    // node-06 (case 5) reports a VM no tenant holds booting from acme's other clone.
    const node = await enrolledNode("node-06");
    await node.report([{ id: "web-2", state: VmState.RUNNING, disks: [booted] }]);
    const deleted = await callOutcome(acme.storage.deleteImage({ image: booted }));
    assert.deepEqual(
      {
        globex: await tenantsOf(globex, "acme-c2"),
        cluster: await tenantsOf(root, "acme-c2"),
        deleteInUse: deleted.reason || "OK",
      },
      { globex: [], cluster: [""], deleteInUse: "IMAGE_IN_USE" },
    );
  });

  // Found by an adversarial tenant review (8 December 2026): a VM's disk outlives
  // its DeleteVm (undefine keeps storage), and then belongs to nobody. Another
  // tenant's CreateVm naming it as a *new* disk passed the control plane's check
  // (no VM names it, no dataset record), and the creating tenant was handed the
  // old tenant's volume: its data, its snapshots (names and labels). Now the
  // storage is asked (refuseStoredDisks). Last in this file: it deletes vm-008.
  it("does not give globex's left-over disk, its data and snapshots, to acme as a 'new' disk", async () => {
    const acme = await asTenant("acme-op", ["operator"], "acme");
    const globex = await asTenant("globex-op", ["operator"], "globex");
    // vm-008 is globex's in the dev cluster; its disk holds globex's data and snapshots.
    const disk = { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-008-disk0" };
    await globex.storage.createSnapshot({ dataset: disk, label: "globex-payroll" });
    const node = (await globex.vms.getVm({ vmId: "vm-008" })).nodeId?.id ?? "";
    assert.notEqual(node, "", "vm-008 is on a node");
    const del = await globex.vms.deleteVm({ vmId: "vm-008", force: true });
    await eventually(
      async () =>
        (await globex.vms.getOperation({ operationId: del.id })).state ===
        VmOperationState.SUCCEEDED,
      { timeoutMs: 30_000 },
    );
    // The volume is still there: the storage backend lists it, with its snapshots.
    const left = (await root.storage.listDatasets({})).datasets.find(
      (d) => d.dataset?.name === "vm-008-disk0",
    );
    assert.ok(left !== undefined && left.snapshotCount > 0, "the deleted VM's volume is left");

    // acme asks for a *new* 1 GiB disk under that name, on the node holding the volume.
    let op: { id: string } | undefined;
    const asked = await callOutcome(
      acme.vms
        .createVm({
          vmId: "acme-thief",
          nodeId: { id: node },
          spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: disk, sizeBytes: GIB }] },
        })
        .then((o) => {
          op = o;
        }),
    );
    // Refused at once, or accepted and then failed on the node: either way, with the reason.
    const done =
      op === undefined
        ? undefined
        : await eventually(
            async () => {
              const got = await acme.vms.getOperation({ operationId: op?.id ?? "" });
              return got.state === VmOperationState.SUCCEEDED ||
                got.state === VmOperationState.FAILED
                ? got
                : false;
            },
            { timeoutMs: 30_000 },
          );
    const create = { reason: done === undefined ? asked.reason : done.reason };
    // The failed create's record goes when it is settled: wait for that, not a fixed time.
    const thief = await eventually(
      async () => {
        const got = await callOutcome(acme.vms.getVm({ vmId: "acme-thief" }));
        return create.reason === "" || got.reason !== "" ? got : false;
      },
      { timeoutMs: 15_000 },
    ).catch(() => ({ reason: "still there" }));
    const snaps = await acme.storage
      .listSnapshots({ dataset: disk })
      .then((l) => l.snapshots.map((s) => s.ref?.snapshotName ?? ""))
      .catch(() => [] as string[]);
    const sizes = (await acme.storage.listDatasets({})).datasets
      .filter((d) => d.dataset?.name === "vm-008-disk0")
      .map((d) => d.sizeBytes);
    assert.deepEqual(
      {
        create: create.reason || "OK",
        globexSnapshotsSeenByAcme: snaps.filter((s) => s.startsWith("globex-payroll")),
        oldVolumeSizesSeenByAcme: sizes,
        thiefVm: thief.reason || "OK",
      },
      {
        create: "DATASET_EXISTS",
        globexSnapshotsSeenByAcme: [],
        oldVolumeSizesSeenByAcme: [],
        thiefVm: "VM_NOT_FOUND",
      },
    );
  });
});
