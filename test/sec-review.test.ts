import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import {
  createServiceClient,
  openChannel,
  type ResolvedContext,
  resolveContext,
} from "../src/client/index.js";
import { AccessService } from "../src/gen/debvisor/v1/access_pb.js";
import { EnrollmentService } from "../src/gen/debvisor/v1/pki_pb.js";
import type { DatasetRef } from "../src/gen/debvisor/v1/storage_pb.js";
import { createCsr } from "../src/pki/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";

/** The reason of a refused call ("OK": it succeeded). */
const reasonOf = (p: Promise<unknown>) =>
  p.then(
    () => "OK",
    (e: grpc.ServiceError) => String(e.metadata.get("debvisor-error-reason")[0] ?? e.code),
  );

/** Attacks found by the adversarial review of the tenancy work, against a dev daemon over TLS. */
describe("adversarial review against a dev daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clientsOf = (ctx: ResolvedContext) => devClients(ctx, channels);
  const bearer = (token: string): ResolvedContext => bearerContext(admin, token);
  let root: ReturnType<typeof clientsOf>;
  let tenantAdmin: ReturnType<typeof clientsOf>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-secrev-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clientsOf(admin);
    await root.access.setBinding({
      principal: "t-admin",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const key = await root.access.createApiKey({
      principal: "t-admin",
      roles: ["admin"],
      tenant: "acme",
    });
    tenantAdmin = clientsOf(bearer(key.token));
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("lets nobody who knows a key id lock its owner out", async () => {
    const victim = await root.access.createApiKey({ principal: "ci", roles: ["viewer"] });
    const id = victim.key?.id ?? "";
    const outsider = clientsOf(bearer(`dvk_${id}_${"x".repeat(43)}`));
    const guesses: string[] = [];
    for (let i = 0; i < 7; i++) guesses.push(await reasonOf(outsider.access.whoAmI({})));
    assert.equal(guesses.at(-1), "AUTH_LOCKED_OUT", `the guesses are told so: ${guesses}`);
    const owner = clientsOf(bearer(victim.token));
    assert.equal(await reasonOf(owner.access.whoAmI({})), "OK", "the owner's key still works");
  });

  it("keeps another tenant's disk hidden when a node names it as a disk of its tenant's VM", async () => {
    const vms = (await root.vms.listVms({ pageSize: 1000 })).vms;
    const onNode1 = vms.filter((v) => v.nodeId?.id === "node-01");
    const mine = onNode1.find((v) => v.tenant === "acme");
    const theirs = vms.find((v) => v.tenant !== "acme" && v.tenant !== "" && v.disks.length > 0);
    assert.ok(mine && theirs);
    const plain = (d: DatasetRef) => ({ backend: d.backend, pool: d.pool, name: d.name });
    const victim = plain(theirs.disks[0] as DatasetRef);
    const own = plain(mine.disks[0] as DatasetRef);
    assert.equal(await reasonOf(tenantAdmin.storage.listSnapshots({ dataset: own })), "OK");
    // A stolen node-01 certificate: its report gives the acme VM the other tenant's disk too.
    const node = clientsOf({
      ...admin,
      certPem: readFileSync(join(dir, "nodes/node-01/node.crt"), "utf8"),
      keyPem: readFileSync(join(dir, "nodes/node-01/node.key"), "utf8"),
    });
    const report = onNode1.map((v) => ({
      id: v.id,
      name: v.name,
      tenant: v.tenant,
      state: v.state,
      vcpus: v.vcpus,
      memoryBytes: v.memoryBytes,
      disks: [...v.disks.map(plain), ...(v.id === mine.id ? [victim] : [])],
    }));
    await node.nodes.heartbeat({
      nodeId: { id: "node-01" },
      overall: 1,
      timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000) + 2) },
      vms: report,
    });
    assert.ok(
      (await root.vms.getVm({ vmId: mine.id })).disks.some((d) => d.name === victim.name),
      "the report was taken",
    );
    for (const call of [
      tenantAdmin.storage.listSnapshots({ dataset: victim }),
      tenantAdmin.storage.createSnapshot({ dataset: victim, label: "taken" }),
      tenantAdmin.storage.pruneSnapshots({ dataset: victim, policy: {}, dryRun: true }),
    ])
      assert.equal(await reasonOf(call), "DATASET_NOT_FOUND");
    assert.equal(await reasonOf(tenantAdmin.storage.listSnapshots({ dataset: own })), "OK");
    assert.equal(await reasonOf(root.storage.listSnapshots({ dataset: victim })), "OK");
  });

  it("lets a tenant admin mint and bind its own tenant's principals", async () => {
    for (const call of [
      tenantAdmin.access.createApiKey({ principal: "t-dev", roles: ["viewer"], tenant: "acme" }),
      tenantAdmin.access.setBinding({ principal: "t-dev", roles: ["viewer"], tenant: "acme" }),
    ])
      assert.equal(await reasonOf(call), "OK");
  });

  it("refuses a tenant admin minting or binding names of nodes about to enrol, case variants and look-alikes of cluster identities", async () => {
    await root.pki.createEnrollmentToken({ nodeName: "node-09" });
    for (const principal of ["node-09", "Node-01", "ADMIN", "System:reconciler"]) {
      assert.equal(
        await reasonOf(
          tenantAdmin.access.createApiKey({ principal, roles: ["viewer"], tenant: "acme" }),
        ),
        "ESCALATION_DENIED",
        `key for ${principal}`,
      );
      assert.equal(
        await reasonOf(
          tenantAdmin.access.setBinding({ principal, roles: ["viewer"], tenant: "acme" }),
        ),
        "ESCALATION_DENIED",
        `binding for ${principal}`,
      );
    }
    // A Cyrillic "а", a zero-width space, a trailing space: names that print like others.
    for (const principal of ["\u0430dmin", "node-01\u200b", "t-admin "]) {
      assert.equal(
        await reasonOf(
          tenantAdmin.access.createApiKey({ principal, roles: ["viewer"], tenant: "acme" }),
        ),
        "INVALID_ARGUMENT",
        `key for ${JSON.stringify(principal)}`,
      );
    }
    const keys = (await root.access.listApiKeys({})).keys.map((k) => k.principal);
    const bindings = (await root.access.listBindings({})).bindings.map((b) => b.principal);
    assert.deepEqual(
      [...keys, ...bindings].filter((p) => !["t-admin", "t-dev", "ci"].includes(p)).sort(),
      // What dev mode made itself: its admin, operator key, nodes and the panel's admin user.
      ["admin", "dev-operator", "node-01", "node-02", "node-03", "user:admin"],
      "nothing was made",
    );
  });
});

describe("anonymous calls and the audit trail", () => {
  it("counts a flood of anonymous enrollment calls in a handful of records; a real enrollment keeps its own", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-secrev-audit-"));
    const daemon = await startDevDaemon(dir, {
      audit: { refusals: { intervalMs: 3_600_000 } },
      auth: { lockout: { throttleDelayMs: 0 } },
      rateLimit: { perSource: { ratePerSecond: 100_000, burst: 100_000 } },
    });
    const ctx = resolveContext(join(dir, "hvctl.yaml"), "dev");
    const rootCh = openChannel(ctx);
    const anonCh = openChannel({ ...ctx, certPem: undefined, keyPem: undefined });
    try {
      const anon = createServiceClient(EnrollmentService, anonCh);
      const csr = await createCsr("node-09");
      const calls = Array.from({ length: 200 }, (_, i) =>
        // Bad tokens (refused as unauthenticated, then rate limited) and malformed requests.
        i % 2 === 0
          ? anon.enroll({
              token: `dvt_${i.toString(16).padStart(16, "0")}_${"x".repeat(43)}`,
              csrPem: csr.csrPem,
            })
          : anon.enroll({ token: "", csrPem: "" }),
      );
      const reasons = new Set(await Promise.all(calls.map(reasonOf)));
      assert.ok(!reasons.has("OK"), [...reasons].join());
      const { token } = await createServiceClient(EnrollmentService, rootCh).createEnrollmentToken({
        nodeName: "node-09",
      });
      // After the flood the address is rate limited for enrollment: wait for one token's worth
      // (pki.enrollLimit refills one every 6 s; the rest is room for a loaded machine).
      await eventually(
        async () => assert.equal(await reasonOf(anon.enroll({ token, csrPem: csr.csrPem })), "OK"),
        { timeoutMs: 30_000, intervalMs: 100 },
      );
    } finally {
      rootCh.close();
      anonCh.close();
      daemon.proc.kill("SIGTERM");
      assert.equal(await daemon.exited, 0);
    }
    const enrolls = readFileSync(join(dir, "audit.log"), "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Record<string, string>)
      // Dev mode enrolls its own three nodes at start.
      .filter(
        (r) =>
          r.method === "Enroll" && !["node-01", "node-02", "node-03"].includes(r.principal ?? ""),
      );
    const own = enrolls.filter((r) => r.event !== "rpc.aggregate");
    assert.deepEqual(
      own.map((r) => `${r.event} ${r.principal} ${r.code}`),
      ["rpc node-09 OK"],
      "only the real enrollment has its own record",
    );
    const counted = enrolls.filter((r) => r.event === "rpc.aggregate");
    assert.ok(counted.length <= 4, `${counted.length} aggregate records`);
    const sum = counted.reduce((n, r) => n + Number(JSON.parse(String(r.args)).count), 0);
    assert.ok(sum >= 200, `${sum} counted`);
  });
});

describe("JWT principals of different issuers", () => {
  it("refuses issuers whose principals could collide: a sub of one would be another's principal", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-secrev-jwt-"));
    const low = await generateKeyPair("ES256", { extractable: true });
    const high = await generateKeyPair("ES256", { extractable: true });
    writeFileSync(join(dir, "low.pem"), await exportSPKI(low.publicKey));
    writeFileSync(join(dir, "high.pem"), await exportSPKI(high.publicKey));
    const issuer = (name: string, file: string) => ({
      issuer: name,
      algorithms: ["ES256"],
      publicKeys: [join(dir, file)],
    });
    // Trusted for operators: jwt:https://idp.example:8443:alice.
    const config = {
      auth: {
        jwt: {
          issuers: [
            issuer("https://idp.example", "low.pem"),
            issuer("https://idp.example:8443", "high.pem"),
          ],
        },
      },
      rbac: {
        bindings: [{ principal: "jwt:https://idp.example:8443:alice", roles: ["operator"] }],
      },
    };
    let daemon: DaemonProcess | undefined;
    try {
      daemon = await startDevDaemon(dir, config);
      // Served: the low issuer's "8443:alice" would be the high issuer's alice.
      const token = await new SignJWT({ roles: [] })
        .setProtectedHeader({ alg: "ES256" })
        .setIssuer("https://idp.example")
        .setSubject("8443:alice")
        .setAudience("debvisor-rpc")
        .setExpirationTime("5m")
        .sign(low.privateKey);
      const ch = openChannel({
        ...resolveContext(join(dir, "hvctl.yaml"), "dev"),
        certPem: undefined,
        keyPem: undefined,
        bearer: token,
      });
      const who = await createServiceClient(AccessService, ch).whoAmI({});
      ch.close();
      assert.fail(`served, and the low issuer's 8443:alice is ${who.principal} with ${who.roles}`);
    } catch (err) {
      assert.match(String(err), /would collide/);
    } finally {
      daemon?.kill();
    }
  });
});
