import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createServiceClient, type ServiceClient } from "../src/client/index.js";
import { createManualClock } from "../src/core/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend, StorageService } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { createAccessPolicy } from "../src/security/index.js";
import { testChannel } from "./helpers/grpc-client.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";
import { type SecuredServer, startSecuredServer } from "./helpers/secured-server.js";

const disk = (name: string) => ({ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name });

describe("tenant isolation", () => {
  let pki: TestPki;
  let s: SecuredServer;
  const channels: grpc.Client[] = [];
  const as = (token: string) => {
    const ch = testChannel(s.server.address, { caPem: pki.ca.certPem });
    channels.push(ch);
    const md = () => {
      const m = new grpc.Metadata();
      m.set("authorization", `Bearer ${token}`);
      return m;
    };
    const wrap = <T extends object>(client: T): T =>
      new Proxy(client, {
        get: (target, prop) => (req: unknown) =>
          (target as Record<string | symbol, (r: unknown, o: unknown) => unknown>)[prop]?.(req, {
            metadata: md(),
          }),
      });
    return {
      nodes: wrap(createServiceClient(NodeService, ch)) as ServiceClient<typeof NodeService>,
      vms: wrap(createServiceClient(VmService, ch)) as ServiceClient<typeof VmService>,
      storage: wrap(createServiceClient(StorageService, ch)) as ServiceClient<
        typeof StorageService
      >,
    };
  };
  let operator: ReturnType<typeof as>;
  let acme: ReturnType<typeof as>;

  before(async () => {
    pki = await createTestPki();
    const clock = createManualClock(Date.now());
    s = await startSecuredServer({
      pki,
      clock,
      policy: createAccessPolicy({}),
      storage: { listSnapshots: async () => [] },
    });
    operator = as(
      (await s.apiKeys.create({ principal: "ops", roles: ["operator"], createdBy: "test" })).token,
    );
    acme = as(
      (
        await s.apiKeys.create({
          principal: "acme-ci",
          roles: ["viewer"],
          tenant: "acme",
          createdBy: "test",
        })
      ).token,
    );
    await operator.nodes.registerNode({ id: { id: "n1" }, hostname: "n1.example" });
    await operator.nodes.heartbeat({
      nodeId: { id: "n1" },
      timestamp: { seconds: 1n },
      vms: [
        { id: "vm-a1", tenant: "acme", nodeId: { id: "n1" }, disks: [disk("vm-a1-disk0")] },
        { id: "vm-g1", tenant: "globex", nodeId: { id: "n1" }, disks: [disk("vm-g1-disk0")] },
      ],
    });
    // The tenants are the control plane's to assign; the report's labels count for nothing.
    await operator.vms.setVmTenant({ vmId: "vm-a1", tenant: "acme" });
    await operator.vms.setVmTenant({ vmId: "vm-g1", tenant: "globex" });
  });
  after(async () => {
    for (const ch of channels) ch.close();
    await s.close();
  });

  it("lists only the tenant's VMs", async () => {
    assert.deepEqual(
      (await acme.vms.listVms({})).vms.map((v) => v.id),
      ["vm-a1"],
    );
    assert.deepEqual(
      (await operator.vms.listVms({})).vms.map((v) => v.id),
      ["vm-a1", "vm-g1"],
      "cluster-wide sees all",
    );
  });

  it("answers NOT_FOUND, not PERMISSION_DENIED, for another tenant's VM, exactly like a missing one", async () => {
    const other = await acme.vms.getVm({ vmId: "vm-g1" }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    const missing = await acme.vms.getVm({ vmId: "vm-zz" }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    assert.equal(other?.code, grpc.status.NOT_FOUND);
    assert.equal(other?.details, missing?.details);
    assert.equal((await acme.vms.getVm({ vmId: "vm-a1" })).tenant, "acme");
  });

  it("does not leak other tenants' VMs through node health", async () => {
    const nodes = await acme.nodes.listNodes({});
    assert.deepEqual(
      nodes.nodes[0]?.health?.vms.map((v) => v.id),
      ["vm-a1"],
    );
    const detail = await acme.nodes.getNode({ id: { id: "n1" } });
    assert.deepEqual(
      detail.vms.map((v) => v.id),
      ["vm-a1"],
    );
    // Nor through the node's counts: they cover the tenant's own VMs only.
    const own = nodes.nodes[0]?.health?.vms ?? [];
    assert.equal(nodes.nodes[0]?.vmCount, 1);
    assert.equal(detail.summary?.vmCount, 1);
    assert.equal(detail.summary?.vcpusAllocated, own[0]?.vcpus);
    assert.equal(detail.summary?.memoryAllocatedBytes, own[0]?.memoryBytes);
  });

  it("hides another tenant's datasets", async () => {
    assert.deepEqual(
      (await acme.storage.listSnapshots({ dataset: disk("vm-a1-disk0") })).snapshots,
      [],
    );
    const err = await acme.storage.listSnapshots({ dataset: disk("vm-g1-disk0") }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    assert.equal(err?.code, grpc.status.NOT_FOUND);
  });

  it("lists only the tenant's datasets, and all of them cluster-wide", async () => {
    const acmeOps = as(
      (
        await s.apiKeys.create({
          principal: "acme-ops",
          roles: ["operator"],
          tenant: "acme",
          createdBy: "test",
        })
      ).token,
    );
    const names = (r: { datasets: { dataset?: { name: string } }[] }) =>
      r.datasets.map((d) => d.dataset?.name);
    const mine = await acmeOps.storage.listDatasets({});
    assert.deepEqual(names(mine), ["vm-a1-disk0"]);
    assert.equal(mine.datasets[0]?.tenant, "acme");
    assert.equal(mine.datasets[0]?.vmId, "vm-a1");
    assert.deepEqual(names(await operator.storage.listDatasets({})), [
      "vm-a1-disk0",
      "vm-g1-disk0",
    ]);
    // Paging a tenant's list never reaches another tenant's datasets.
    const first = await acmeOps.storage.listDatasets({ pageSize: 1 });
    assert.equal(first.nextPageToken, "");
  });
});
