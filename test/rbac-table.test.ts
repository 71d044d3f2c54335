import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { DescFile } from "@bufbuild/protobuf";
import { createAuditService } from "../src/audit/index.js";
import {
  createDomainServices,
  createEventLog,
  createInventory,
  NO_EVENTS,
} from "../src/cluster/index.js";
import { type MethodSpec, type Principal, silentLogger, systemClock } from "../src/core/index.js";
import { file_debvisor_v1_access } from "../src/gen/debvisor/v1/access_pb.js";
import { file_debvisor_v1_audit } from "../src/gen/debvisor/v1/audit_pb.js";
import { file_debvisor_v1_migration } from "../src/gen/debvisor/v1/migration_pb.js";
import { file_debvisor_v1_node } from "../src/gen/debvisor/v1/node_pb.js";
import { file_debvisor_v1_storage } from "../src/gen/debvisor/v1/storage_pb.js";
import { file_debvisor_v1_vm } from "../src/gen/debvisor/v1/vm_pb.js";
import { file_debvisor_v1_watch } from "../src/gen/debvisor/v1/watch_pb.js";
import { createAccessPolicy, createAccessService, decide } from "../src/security/index.js";
import { createSqliteStore } from "../src/store/index.js";

const store = createSqliteStore({
  path: join(mkdtempSync(join(tmpdir(), "dv-rbac-")), "s.db"),
  logger: silentLogger,
});
const services = createDomainServices({
  inventory: createInventory({ store, clock: systemClock }),
  storage: { listSnapshots: async () => undefined },
  store,
  clock: systemClock,
  events: {
    log: createEventLog({ store, clock: systemClock, maxCount: 100, maxAgeMs: 60_000 }),
    sink: NO_EVENTS,
  },
});
const access = createAccessService({
  policy: () => createAccessPolicy({}),
  apiKeys: undefined as never,
  bindings: undefined as never,
  roles: undefined as never,
  rotationGraceMs: 0,
});
const auditService = createAuditService({
  log: undefined as never,
  closing: new AbortController().signal,
});
const methods: MethodSpec[] = [...services, access, auditService].flatMap((s) =>
  s.methods.map((m) => m.spec),
);
const accessMethods = [...access.methods, ...auditService.methods].map((m) => m.spec.name);
/** Methods any authenticated principal may call: they only tell callers about themselves. */
const OPEN = ["WhoAmI", "CheckPermission"];

/** What each built-in role may call, written out by hand (not derived from the evaluator). */
const ALLOWED: Record<string, string[]> = {
  operator: [...methods.map((m) => m.name).filter((n) => !accessMethods.includes(n)), ...OPEN],
  developer: [
    "ListNodes",
    "GetNode",
    "ListVms",
    "GetVm",
    "GetOperation",
    "WatchOperation",
    "CreateSnapshot",
    "CreateRbdTemplateSnapshot",
    "ListSnapshots",
    "ListDatasets",
    "ListImages",
    "CloneRbdFromTemplate",
    "ListEvents",
    "WatchEvents",
    "WatchNodes",
    "WatchVms",
  ],
  monitor: ["ListNodes", "GetNode", "Heartbeat", "WatchNodes"],
  viewer: [
    "ListNodes",
    "GetNode",
    "ListVms",
    "GetVm",
    "GetOperation",
    "WatchOperation",
    "ListSnapshots",
    "ListDatasets",
    "ListImages",
    "PrepareMigration",
    "ListMigrations",
    "GetMigration",
    "WatchMigration",
    "ListEvents",
    "WatchEvents",
    "WatchNodes",
    "WatchVms",
    "WatchMigrations",
  ],
  admin: accessMethods,
  node: ["RegisterNode", "Heartbeat"],
};
for (const role of ["developer", "monitor", "viewer", "node"]) ALLOWED[role]?.push(...OPEN);

describe("every RPC x every built-in role", () => {
  const policy = createAccessPolicy({});
  for (const [role, allowed] of Object.entries(ALLOWED)) {
    for (const m of methods) {
      const expected = allowed.includes(m.name);
      it(`${role} ${expected ? "may" : "may not"} call ${m.service.split(".").pop()}/${m.name}`, () => {
        const principal: Principal = { id: "node-01", method: "apikey", roles: [role] };
        const d = decide(policy, principal, m.permission, { nodeId: "node-01" });
        assert.equal(d.allowed, expected, d.reason);
      });
    }
  }
});

describe("the permission map", () => {
  it("names a permission for every method of every debvisor.v1 service in the protos", () => {
    const files: DescFile[] = [
      file_debvisor_v1_node,
      file_debvisor_v1_vm,
      file_debvisor_v1_migration,
      file_debvisor_v1_storage,
      file_debvisor_v1_access,
      file_debvisor_v1_audit,
      file_debvisor_v1_watch,
    ];
    const served = new Map(methods.map((m) => [m.path, m]));
    for (const f of files) {
      for (const s of f.services) {
        for (const m of s.methods) {
          const spec = served.get(`/${s.typeName}/${m.name}`);
          assert.ok(spec, `${s.typeName}/${m.name} is not served`);
          if (spec.permission === null) {
            assert.ok(OPEN.includes(m.name), `${s.typeName}/${m.name} has no permission`);
          } else assert.match(spec.permission, /^[a-z]+(:[a-z-]+)+$/);
        }
      }
    }
  });

  it("denies a principal with no roles everything", () => {
    const policy = createAccessPolicy({});
    for (const m of methods.filter((x) => !OPEN.includes(x.name)))
      assert.equal(
        decide(policy, { id: "x", method: "mtls", roles: [] }, m.permission).allowed,
        false,
      );
  });

  it("lets the node role act only for its own node", () => {
    const policy = createAccessPolicy({});
    const self: Principal = { id: "node-07", method: "mtls", roles: [] };
    const bound = createAccessPolicy({ bindings: [{ principal: "node-07", roles: ["node"] }] });
    assert.equal(
      decide(policy, self, "node:heartbeat", { nodeId: "node-07" }).allowed,
      false,
      "no binding, no grant",
    );
    assert.equal(decide(bound, self, "node:heartbeat", { nodeId: "node-07" }).allowed, true);
    const other = decide(bound, self, "node:heartbeat", { nodeId: "node-08" });
    assert.equal(other.allowed, false);
    assert.match(other.reason, /only for node node-07/);
  });

  it("names the deciding rule", () => {
    const policy = createAccessPolicy({
      roles: [{ name: "snapshots", grants: ["storage:snapshot:*"] }],
    });
    const d = decide(
      policy,
      { id: "ci", method: "apikey", roles: ["snapshots"] },
      "storage:snapshot:create",
    );
    assert.equal(d.reason, "role snapshots grants storage:snapshot:*");
    const miss = decide(
      policy,
      { id: "ci", method: "apikey", roles: ["snapshots"] },
      "storage:clone",
    );
    assert.match(miss.reason, /roles snapshots: none grants storage:clone/);
  });
});
