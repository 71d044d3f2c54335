import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, devClients } from "./helpers/dev-clients.js";

/** The part of a migration id (`m-<time>-<seq><random>`) that orders ids made in one millisecond. */
const seqOf = (id: string) => id.split("-")[2]?.slice(0, 2);

describe("migration ids across tenants", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const channels: grpc.Client[] = [];
  let root: ReturnType<typeof devClients>;
  let tenantOps: ReturnType<typeof devClients>;
  let mine: VmInfo[];
  let others: VmInfo[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-migid-"));
    daemon = await startDevDaemon(dir);
    const admin: ResolvedContext = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = devClients(admin, channels);
    const vms = (await root.vms.listVms({ pageSize: 1000 })).vms.filter(
      // On shared storage: any node can take them.
      (v) => v.liveMigratable && v.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD),
    );
    const tenants = [...new Set(vms.map((v) => v.tenant))];
    const T = tenants.find((t) => vms.filter((v) => v.tenant === t).length >= 2) ?? "";
    mine = vms.filter((v) => v.tenant === T);
    others = vms.filter((v) => v.tenant !== T);
    assert.ok(mine.length >= 2 && others.length >= 1, "the dev world has VMs to migrate");
    const key = await root.access.createApiKey({
      principal: "t-ops",
      roles: ["operator"],
      tenant: T,
    });
    tenantOps = devClients(bearerContext(admin, key.token), channels);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("tells a tenant nothing of how many migrations other tenants started", async () => {
    const start = async (c: typeof root, vm: VmInfo) =>
      (await c.migrations.startMigration({ vm: { vmId: vm.id } })).migrationId;
    const first = await start(tenantOps, mine[0] as VmInfo);
    // Other tenants' migrations (a drain, failovers) between the tenant's two.
    for (const vm of others.slice(0, 2)) await start(root, vm);
    const second = await start(tenantOps, mine[1] as VmInfo);
    // Before: a counter shared by every migration of the process, so the
    // second id said "2 migrations were started in between".
    assert.equal(seqOf(second), seqOf(first), `${first} then ${second}`);
  });
});
