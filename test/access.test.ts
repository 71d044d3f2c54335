import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import {
  createServiceClient,
  openChannel,
  type ResolvedContext,
  resolveContext,
} from "../src/client/index.js";
import { AccessService } from "../src/gen/debvisor/v1/access_pb.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService } from "../src/gen/debvisor/v1/pki_pb.js";
import { createCsr } from "../src/pki/index.js";
import { type DaemonProcess, startDaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

describe("access management through hvctl and AccessService", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const withToken = (token: string) =>
    openChannel({ ...admin, certPem: undefined, keyPem: undefined, bearer: token });
  const heartbeat = (ch: grpc.Client, node = "node-01") =>
    createServiceClient(NodeService, ch)
      .heartbeat({
        nodeId: { id: node },
        timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
      })
      .then(
        () => 0,
        (e: grpc.ServiceError) => e.code,
      );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-access-"));
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(cfg, "rbac:\n  roles:\n    - name: superuser\n      grants: ['*']\n");
    daemon = await startDaemonProcess([
      "--dev",
      "--data-dir",
      dir,
      "--config",
      cfg,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => daemon?.kill());

  it("keeps mTLS for the dev admin and gives the dev context an operator API key", async () => {
    const me = await hvctl("auth", "whoami");
    assert.equal(me.code, 0, me.stderr);
    assert.match(me.stdout, /principal: +admin\nvia: +mtls\nroles: +admin, operator/);
    const op = await hvctl("--context", "dev-operator", "auth", "whoami");
    assert.match(
      op.stdout,
      /principal: +dev-operator\nvia: +apikey \(key [0-9a-f]{16}\)\nroles: +operator/,
    );
    const nodes = await hvctl("--context", "dev-operator", "node", "list");
    assert.equal(nodes.code, 0, nodes.stderr);
    assert.match(nodes.stdout, /^node-01\s/m);
  });

  it("answers can-i with the deciding rule, and exit code 1 for no", async () => {
    const yes = await hvctl("auth", "can-i", "auth:apikey:create");
    assert.equal(yes.code, 0);
    assert.match(yes.stdout, /^yes \(role admin grants auth:\*\)/);
    const no = await hvctl("--context", "dev-operator", "auth", "can-i", "auth:apikey:create");
    assert.equal(no.code, 1);
    assert.match(no.stdout, /^no \(roles operator: none grants auth:apikey:create\)/);
  });

  it("creates a key whose token is shown once and grants only its roles; bindings apply without a restart", async () => {
    const created = await hvctl(
      "-o",
      "json",
      "apikey",
      "create",
      "--roles",
      "viewer",
      "--principal",
      "bob",
      "--description",
      "ci",
    );
    assert.equal(created.code, 0, created.stderr);
    const { token, key } = JSON.parse(created.stdout) as {
      token: string;
      key: { id: string; principal: string };
    };
    assert.match(token, /^dvk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    assert.equal(key.principal, "bob");
    const list = await hvctl("apikey", "list", "--principal", "bob");
    assert.match(list.stdout, new RegExp(`^${key.id}\\s+bob\\s+viewer\\s`, "m"));
    assert.ok(!list.stdout.includes(token.slice(22)), "the secret is never listed");

    const bob = withToken(token);
    assert.ok((await createServiceClient(NodeService, bob).listNodes({})).nodes.length >= 3);
    assert.equal(await heartbeat(bob), 7, "viewer may not heartbeat");
    const ach = openChannel(admin);
    await createServiceClient(AccessService, ach).setBinding({
      principal: "bob",
      roles: ["monitor"],
    });
    // monitor holds node:heartbeat, but only for nodes bob is or registered: node-01 is
    // neither (PERMISSION_DENIED from the handler, not the role), an unknown node is NOT_FOUND.
    await eventually(async () =>
      assert.equal(await heartbeat(bob, "bob-probe"), 5, "the binding applied without a restart"),
    );
    assert.equal(await heartbeat(bob), 7, "not a node bob is or registered");
    const bindings = await createServiceClient(AccessService, ach).listBindings({});
    assert.ok(
      bindings.bindings.some(
        (b) => b.principal === "bob" && b.source === "store" && b.roles.includes("monitor"),
      ),
    );
    await createServiceClient(AccessService, ach).setBinding({ principal: "bob", roles: [] });
    ach.close();
    bob.close();
  });

  it("adds a custom role through the API that applies at once, and protects built-in roles", async () => {
    const ach = openChannel(admin);
    const access = createServiceClient(AccessService, ach);
    await access.setRole({ name: "snapshotter", grants: ["storage:snapshot:*"] });
    await access.setBinding({ principal: "dora", roles: ["snapshotter"] });
    const d = await eventually(async () => {
      const answer = await access.checkPermission({
        permission: "storage:snapshot:create",
        principal: "dora",
      });
      assert.equal(answer.allowed, true);
      return answer;
    });
    assert.equal(d.reason, "role snapshotter grants storage:snapshot:*");
    assert.ok(
      (await access.listRoles({})).roles.some((r) => r.name === "snapshotter" && !r.builtIn),
    );
    await assert.rejects(
      access.setRole({ name: "viewer", grants: ["node:list"] }),
      (e: grpc.ServiceError) => e.code === 9,
    );
    await assert.rejects(
      access.setRole({ name: "everything", grants: ["*"] }),
      (e: grpc.ServiceError) => e.code === 7,
    );
    ach.close();
  });

  it("refuses to grant what the caller does not hold", async () => {
    const escalate = await hvctl(
      "apikey",
      "create",
      "--roles",
      "superuser",
      "--principal",
      "mallory",
    );
    assert.equal(escalate.code, 4, "permission denied");
    assert.match(escalate.stderr, /cannot grant permissions you do not hold/);
    const operatorTries = await hvctl(
      "--context",
      "dev-operator",
      "apikey",
      "create",
      "--roles",
      "viewer",
    );
    assert.equal(operatorTries.code, 4, "permission denied");
    assert.match(operatorTries.stderr, /permission denied: you need auth:apikey:create/);
    const ach = openChannel(admin);
    await assert.rejects(
      createServiceClient(AccessService, ach).setBinding({
        principal: "admin",
        roles: ["superuser"],
      }),
      (e: grpc.ServiceError) => e.code === 7 && /cannot grant/.test(e.details),
    );
    ach.close();
  });

  it("refuses keys, tokens and certificates that would act as a more powerful principal", async () => {
    const ach = openChannel(admin);
    const access = createServiceClient(AccessService, ach);
    await access.setRole({
      name: "keymaker",
      grants: [
        "auth:apikey:create",
        "pki:token:create",
        "pki:cert:issue",
        "node:list",
        "node:register",
        "node:heartbeat",
        "node:connect",
      ],
    });
    await access.setRole({ name: "lister", grants: ["node:list"] });
    const km = await access.createApiKey({ principal: "km", roles: ["keymaker"] });
    ach.close();
    const kch = withToken(km.token);
    const asKm = createServiceClient(AccessService, kch);
    const denied = (e: grpc.ServiceError) => e.code === 7 && /cannot grant/.test(e.details);
    // Once the stored roles reach the policy.
    await eventually(async () =>
      assert.ok((await asKm.createApiKey({ roles: ["lister"] })).token, "a key for itself is fine"),
    );
    await assert.rejects(
      asKm.createApiKey({ principal: "admin", roles: ["lister"] }),
      denied,
      "a key named admin would carry admin's bindings",
    );
    const pki = createServiceClient(EnrollmentService, kch);
    assert.ok(
      (await pki.createEnrollmentToken({ nodeName: "node-77" })).token,
      "a token for a new node is fine",
    );
    await assert.rejects(
      pki.createEnrollmentToken({ nodeName: "admin" }),
      denied,
      "a certificate named admin would be admin",
    );
    const { csrPem } = await createCsr("x");
    await assert.rejects(
      pki.issueCertificate({ commonName: "admin", usage: "client", csrPem }),
      denied,
    );
    kch.close();
  });

  it("confines a tenant's administrator to its tenant", async () => {
    const ach = openChannel(admin);
    const access = createServiceClient(AccessService, ach);
    const other = await access.createApiKey({
      principal: "globex-ci",
      roles: ["viewer"],
      tenant: "globex",
    });
    const tadmin = await access.createApiKey({
      principal: "acme-admin",
      roles: ["admin", "viewer"],
      tenant: "acme",
    });
    ach.close();
    const tch = withToken(tadmin.token);
    const asT = createServiceClient(AccessService, tch);
    const keys = await asT.listApiKeys({});
    assert.ok(keys.keys.every((k) => k.tenant === "acme"));
    await assert.rejects(
      asT.revokeApiKey({ id: other.key?.id ?? "" }),
      (e: grpc.ServiceError) => e.code === 5,
      "another tenant's key looks missing",
    );
    await assert.rejects(
      asT.setRole({ name: "acme-role", grants: ["vm:list"] }),
      (e: grpc.ServiceError) => e.code === 7,
    );
    await assert.rejects(
      createServiceClient(EnrollmentService, tch).createEnrollmentToken({ nodeName: "node-88" }),
      (e: grpc.ServiceError) => e.code === 7,
    );
    const b = await asT.setBinding({ principal: "acme-dev", roles: ["viewer"] });
    assert.equal(b.tenant, "acme", "a binding without a tenant stays in the caller's");
    tch.close();
  });

  it("prints names from the server with their control characters escaped, never sent to the terminal", async () => {
    const evil = "ops\u001b]0;owned\u0007\r\nfake-row\u202e";
    const create = "-o json apikey create --roles viewer --principal dave --description";
    const made = await hvctl(...create.split(" "), evil);
    assert.equal(made.code, 0, made.stderr);
    const table = await hvctl("-o", "wide", "apikey", "list", "--principal", "dave");
    assert.equal(table.code, 0, table.stderr);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for them is the point
    assert.doesNotMatch(table.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/);
    assert.equal(table.stdout.trim().split("\n").length, 2, "a header and one row: no forged row");
    assert.ok(
      table.stdout.includes("ops\\x1b]0;owned\\x07\\x0d\\x0afake-row\\u{202e}"),
      table.stdout,
    );
    const json = await hvctl("-o", "json", "apikey", "list", "--principal", "dave");
    assert.ok(json.stdout.includes("\\u001b"), "JSON keeps the value, escaped its own way");
  });

  it("rotates with a grace period and revokes at once", async () => {
    const created = JSON.parse(
      (await hvctl("-o", "json", "apikey", "create", "--roles", "viewer", "--principal", "carol"))
        .stdout,
    ) as {
      token: string;
      key: { id: string };
    };
    const rotated = await hvctl("-o", "json", "apikey", "rotate", created.key.id, "--grace", "1h");
    assert.equal(rotated.code, 0, rotated.stderr);
    const next = JSON.parse(rotated.stdout) as { token: string; key: { id: string } };
    for (const t of [created.token, next.token]) {
      const ch = withToken(t);
      assert.ok((await createServiceClient(NodeService, ch).listNodes({})).nodes.length > 0);
      ch.close();
    }
    const revoked = await hvctl("apikey", "revoke", next.key.id);
    assert.equal(revoked.code, 0, revoked.stderr);
    const ch = withToken(next.token);
    await assert.rejects(
      createServiceClient(NodeService, ch).listNodes({}),
      (e: grpc.ServiceError) => e.code === 16,
    );
    ch.close();
    const list = await hvctl("apikey", "list", "--principal", "carol");
    assert.match(list.stdout, new RegExp(`^${created.key.id}\\s.*rotated to ${next.key.id}`, "m"));
    assert.match(list.stdout, new RegExp(`^${next.key.id}\\s.*revoked`, "m"));
  });
});
