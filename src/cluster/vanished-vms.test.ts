import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, rangeAll } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";

/**
 * A node reporting VMs by id, a second apart (each report newer than the last).
 * Every VM is placed by the node's own first report: records on its word alone.
 */
async function withNode(
  body: (n: {
    report: (...ids: string[]) => Promise<void>;
    records: () => Promise<string[]>;
    inventory: ReturnType<typeof createInventory>;
    store: ReturnType<typeof createSqliteStore>;
  }) => Promise<void>,
) {
  const dir = mkdtempSync(join(tmpdir(), "dv-vanished-"));
  const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const inventory = createInventory({
    store,
    clock: systemClock,
    heartbeatTtlMs: 30_000,
    logger: silentLogger,
  });
  let at = Math.floor(Date.now() / 1000) - 100;
  try {
    await inventory.register(create(NodeInfoSchema, { id: { id: "n1" } }), "test");
    const report = async (...ids: string[]) => {
      at += 1;
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "n1" },
          timestamp: { seconds: BigInt(at) },
          vms: ids.map((id) => ({ id, name: id, state: VmState.RUNNING, vcpus: 1 })),
        }),
      );
    };
    /** The VM records as stored. */
    const records = async () => {
      const out: string[] = [];
      for await (const kv of rangeAll(store, "vms/")) out.push(kv.key.slice("vms/".length));
      return out.sort();
    };
    await body({ report, records, inventory, store });
  } finally {
    inventory.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("records of VMs a node's report no longer lists", () => {
  it("go when they were the node's word alone; a tenant's or a moving VM's stay", async () => {
    await withNode(async ({ report, records, inventory, store }) => {
      await report("web-1", "db-1", "app-1", "mig-1");
      assert.deepEqual(await records(), ["app-1", "db-1", "mig-1", "web-1"]);
      // app-1 is given a tenant (an operator's word); mig-1 is being migrated.
      await inventory.seedTenants([{ id: "app-1", tenant: "acme" }], "test");
      await store.put(`${MIGRATION_LOCKS}mig-1`, new Uint8Array([1]));
      await report("db-1");
      assert.deepEqual(
        await records(),
        ["app-1", "db-1", "mig-1"],
        "web-1 went; the tenant's VM and the one a migration holds stayed",
      );
      await store.delete(`${MIGRATION_LOCKS}mig-1`);
      await report("db-1");
      assert.deepEqual(await records(), ["app-1", "db-1", "mig-1"], "only a report that drops it");
      await report("db-1", "mig-1");
      await report("db-1");
      assert.deepEqual(await records(), ["app-1", "db-1"], "gone once no migration holds it");
      // Reported again: claimed anew.
      await report("db-1", "web-1");
      assert.deepEqual(await records(), ["app-1", "db-1", "web-1"]);
    });
  });
});
