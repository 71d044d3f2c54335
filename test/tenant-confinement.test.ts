import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createServiceClient, type ResolvedContext, resolveContext } from "../src/client/index.js";
import { createManualClock } from "../src/core/index.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../src/gen/debvisor/v1/vm_pb.js";
import { createCsr } from "../src/pki/index.js";
import { createAccessPolicy, createJwtVerifier } from "../src/security/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, devClients } from "./helpers/dev-clients.js";
import { testChannel } from "./helpers/grpc-client.js";
import { createTestPki } from "./helpers/pki.js";
import { startSecuredServer } from "./helpers/secured-server.js";

/** The code of a refused call (0: it succeeded). */
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 0,
    (e: grpc.ServiceError) => e.code,
  );

describe("tenant confinement against a dev daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clientsOf>;
  let tenantAdmin: ReturnType<typeof clientsOf>;
  let tenantViewer: ReturnType<typeof clientsOf>;
  let T: string;
  let U: string;
  let vmU: VmInfo;
  const bearer = (token: string): ResolvedContext => bearerContext(admin, token);
  /** A certificate for `cn`, issued by the cluster admin: a credential that carries no roles of its own. */
  const certFor = async (cn: string): Promise<ResolvedContext> => {
    const csr = await createCsr(cn);
    const cert = await root.pki.issueCertificate({
      commonName: cn,
      usage: "client",
      csrPem: csr.csrPem,
    });
    return { ...admin, certPem: cert.certificatePem, keyPem: csr.keyPem };
  };
  const bindingsOf = async (principal: string) =>
    (await root.access.listBindings({})).bindings
      .filter((b) => b.principal === principal)
      .map((b) => `${b.tenant || "*"}:${b.roles.join("+")}`)
      .sort();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-confine-"));
    daemon = await startDevDaemon(dir);
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clientsOf(admin);
    const vms = (await root.vms.listVms({ pageSize: 1000 })).vms;
    T = vms[0]?.tenant ?? "";
    vmU = vms.find((v) => v.tenant !== T) as VmInfo;
    U = vmU.tenant;
    await root.access.setBinding({ principal: "t-admin", roles: ["admin", "operator"], tenant: T });
    await root.access.setBinding({ principal: "u-user", roles: ["viewer"], tenant: U });
    // A principal of U by its API key alone, without any binding.
    await root.access.createApiKey({ principal: "u-keyed", roles: ["viewer"], tenant: U });
    await root.access.setBinding({ principal: "ops", roles: ["operator"] });
    const key = async (principal: string, roles: string[]) =>
      (await root.access.createApiKey({ principal, roles, tenant: T })).token;
    tenantAdmin = clientsOf(bearer(await key("t-admin", ["viewer"])));
    tenantViewer = clientsOf(bearer(await key("t-viewer", ["viewer"])));
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("refuses a tenant admin binding a principal of another tenant, in either tenant", async () => {
    for (const principal of ["u-user", "u-keyed"]) {
      for (const tenant of [T, U]) {
        const code = await codeOf(
          tenantAdmin.access.setBinding({ principal, roles: ["admin"], tenant }),
        );
        assert.equal(code, grpc.status.PERMISSION_DENIED, `binding ${principal} in ${tenant}`);
      }
    }
    assert.deepEqual(await bindingsOf("u-user"), [`${U}:viewer`], "nothing changed");
    assert.deepEqual(await bindingsOf("u-keyed"), []);
    // Each refusal is in the audit trail, with the rule that decided it.
    const denied = (
      await root.audit.listAuditRecords({
        filter: { principal: "t-admin", method: "SetBinding", code: "PERMISSION_DENIED" },
      })
    ).records;
    assert.equal(denied.length, 4);
  });

  it("refuses a tenant admin binding cluster-wide principals, so it cannot confine the cluster admin", async () => {
    for (const principal of ["admin", "ops", "node-01", "system:failover-controller"]) {
      const code = await codeOf(
        tenantAdmin.access.setBinding({ principal, roles: ["viewer"], tenant: T }),
      );
      assert.equal(code, grpc.status.PERMISSION_DENIED, principal);
    }
    assert.deepEqual(await bindingsOf("ops"), ["*:operator"]);
    // The cluster admin still acts cluster-wide.
    assert.equal(await codeOf(root.pki.listCertificates({})), 0);
  });

  it("refuses a tenant admin minting keys for cluster-wide identities, node names or other tenants' principals", async () => {
    for (const principal of ["admin", "ops", "node-01", "system:reconciler", "u-user"]) {
      const code = await codeOf(
        tenantAdmin.access.createApiKey({ principal, roles: ["viewer"], tenant: T }),
      );
      assert.equal(code, grpc.status.PERMISSION_DENIED, principal);
    }
    assert.equal(
      await codeOf(
        tenantAdmin.access.createApiKey({ principal: "t-fresh", roles: ["viewer"], tenant: T }),
      ),
      0,
      "a principal of its own tenant alone is fine",
    );
    // A key the cluster admin made for a node name, confined to T: the tenant admin sees it, may not rotate it.
    const nodeKey = await root.access.createApiKey({
      principal: "node-02",
      roles: ["viewer"],
      tenant: T,
    });
    assert.equal(
      await codeOf(tenantAdmin.access.rotateApiKey({ id: nodeKey.key?.id ?? "" })),
      grpc.status.PERMISSION_DENIED,
    );
  });

  it("keeps a cluster-wide operator cluster-wide when it also holds a tenant binding", async () => {
    await root.access.setBinding({ principal: "ops", roles: ["viewer"], tenant: T });
    const ops = clientsOf(await certFor("ops"));
    // A node-wide action (bad node id: refused by validation, after authorization).
    assert.equal(
      await codeOf(ops.nodes.cordonNode({ id: { id: "BAD NODE" } })),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal((await ops.vms.getVm({ vmId: vmU.id })).tenant, U, "sees other tenants' VMs");
    assert.equal((await ops.access.whoAmI({})).tenant, "", "reported cluster-wide");
  });

  it("scopes roles per tenant: viewer in one, operator in another", async () => {
    await root.access.setBinding({ principal: "split", roles: ["viewer"], tenant: T });
    await root.access.setBinding({ principal: "split", roles: ["operator"], tenant: U });
    const split = clientsOf(await certFor("split"));
    const vms = (await split.vms.listVms({ pageSize: 1000 })).vms;
    assert.deepEqual([...new Set(vms.map((v) => v.tenant))].sort(), [T, U].sort());
    const zfsT = vms.find(
      (v) => v.tenant === T && v.disks[0]?.backend === StorageBackend.BACKEND_ZFS,
    );
    assert.ok(zfsT);
    // Removing the binding of one tenant leaves the other.
    await root.access.setBinding({ principal: "split", roles: [], tenant: U });
    assert.deepEqual(await bindingsOf("split"), [`${T}:viewer`]);
  });

  it("binds a tenant whose name is not a plain word, as a config binding can", async () => {
    const odd = "Acme Corp/EU";
    const vm = (await root.vms.listVms({ pageSize: 1000 })).vms.find(
      (v) => v.tenant !== T && v.id !== vmU.id,
    ) as VmInfo;
    await root.vms.setVmTenant({ vmId: vm.id, tenant: odd });
    await root.access.setBinding({ principal: "acme-eu", roles: ["viewer"], tenant: odd });
    const eu = clientsOf(await certFor("acme-eu"));
    assert.deepEqual(
      (await eu.vms.listVms({ pageSize: 1000 })).vms.map((v) => v.id),
      [vm.id],
      "sees its tenant's VM, and only it",
    );
    assert.deepEqual(await bindingsOf("acme-eu"), [`${odd}:viewer`]);
    // Another tenant's admin cannot bind in it.
    assert.equal(
      await codeOf(
        tenantAdmin.access.setBinding({ principal: "x", roles: ["viewer"], tenant: odd }),
      ),
      grpc.status.PERMISSION_DENIED,
    );
    await root.access.setBinding({ principal: "acme-eu", roles: [], tenant: odd });
    assert.deepEqual(await bindingsOf("acme-eu"), []);
  });

  it("answers a hidden VM exactly like a missing one: code, message and reason", async () => {
    const err = (p: Promise<unknown>) =>
      p.then(
        () => assert.fail("answered"),
        (e) => e,
      );
    const hidden: grpc.ServiceError = await err(tenantViewer.vms.getVm({ vmId: vmU.id }));
    const missing: grpc.ServiceError = await err(tenantViewer.vms.getVm({ vmId: "vm-nope" }));
    assert.equal(hidden.code, grpc.status.NOT_FOUND);
    assert.equal(hidden.code, missing.code);
    assert.equal(hidden.details, missing.details);
    assert.deepEqual(
      hidden.metadata.get("debvisor-error-reason"),
      missing.metadata.get("debvisor-error-reason"),
    );
  });

  it("shows a tenant no node usage that other tenants' VMs make up", async () => {
    const all = (await root.nodes.listNodes({ pageSize: 1000 })).nodes;
    // The dev nodes report the memory and vCPUs their running VMs use, every tenant's.
    const shared = all.find((n) => n.health?.vms.some((v) => v.tenant !== T));
    assert.ok(
      shared !== undefined && (shared.health?.memUsedPct ?? 0) > 0,
      "a node with others' VMs",
    );
    const id = shared.info?.id?.id ?? "";
    const views = [
      (await tenantViewer.nodes.listNodes({ pageSize: 1000 })).nodes.find(
        (n) => n.info?.id?.id === id,
      ),
      (await tenantViewer.nodes.getNode({ id: { id } })).summary,
    ];
    for (const n of views) {
      assert.ok(n?.health !== undefined);
      assert.ok(n.health.vms.every((v) => v.tenant === T));
      // Before: memUsedPct x capacity was every tenant's running VMs' memory, to the byte.
      assert.deepEqual(
        [n.health.cpuLoad, n.health.memUsedPct, n.health.diskUsedPct],
        [0, 0, 0],
        "the node's own measurements cover other tenants' VMs",
      );
      // Said so, so that 0 is not read as an idle node.
      assert.equal(n.usageHidden, true);
    }
    assert.ok((shared.health?.memUsedPct ?? 0) > 0, "a cluster-wide caller still sees them");
    assert.equal(shared.usageHidden, false);
  });
});

describe("principal names by credential source", () => {
  it("gives a JWT whose sub is the admin's or a node's name nothing of theirs", async () => {
    const clock = createManualClock(Date.now());
    const pki = await createTestPki();
    const es256 = await generateKeyPair("ES256", { extractable: true });
    const jwk = { ...(await exportJWK(es256.publicKey)), kid: "k1", alg: "ES256" };
    const jwt = createJwtVerifier(
      [
        {
          issuer: "idp",
          audience: "debvisor-rpc",
          algorithms: ["ES256"],
          publicKeyPems: [],
          jwks: { keys: [jwk] },
          rolesClaim: "roles",
          clockSkewSeconds: 30,
        },
      ],
      clock,
    );
    const s = await startSecuredServer({
      pki,
      clock,
      jwt,
      policy: createAccessPolicy({
        bindings: [
          { principal: "admin", roles: ["operator"] },
          { principal: "node-01", roles: ["node"] },
          { principal: "jwt:idp:alice", roles: ["viewer"] },
        ],
      }),
    });
    const ch = testChannel(s.server.address, { caPem: pki.ca.certPem });
    try {
      const nodes = createServiceClient(NodeService, ch);
      const as = async (sub: string) => {
        const token = await new SignJWT({})
          .setProtectedHeader({ alg: "ES256", kid: "k1" })
          .setSubject(sub)
          .setIssuer("idp")
          .setAudience("debvisor-rpc")
          .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
          .sign(es256.privateKey);
        const metadata = new grpc.Metadata();
        metadata.set("authorization", `Bearer ${token}`);
        return { metadata };
      };
      assert.equal(
        await codeOf(nodes.listNodes({}, await as("admin"))),
        grpc.status.PERMISSION_DENIED,
      );
      assert.equal(
        await codeOf(
          nodes.heartbeat(
            { nodeId: { id: "node-01" }, timestamp: { seconds: 1n } },
            await as("node-01"),
          ),
        ),
        grpc.status.PERMISSION_DENIED,
      );
      assert.equal(await codeOf(nodes.listNodes({}, await as("alice"))), 0, "its own namespace");
    } finally {
      ch.close();
      await s.close();
    }
  });
});
