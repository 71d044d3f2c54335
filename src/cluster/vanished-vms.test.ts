// VM records a node's reports write on its word alone: their budget (first-claims.ts) and
// their deletion with the node (vanished-vms.ts). The cases marked "review" were found by an
// adversarial review (8 December 2026) and failed before their fixes.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type Clock, createManualClock, RpcError, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore, rangeAll } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { removeNode } from "./node-removal.js";
import { createVmLocator } from "./vm-locator.js";

/** What a case works with: node `n1`, registered, reporting VMs by id. */
interface Node {
  readonly inventory: ReturnType<typeof createInventory>;
  readonly store: KvStore;
  readonly clock: ReturnType<typeof createManualClock>;
  /** A report a second after the last, listing `ids`; whether its content was stored. */
  report(...ids: string[]): Promise<boolean>;
  /** A report stamped `at` (epoch seconds). */
  reportAt(at: number, ids: readonly string[]): Promise<boolean>;
  /** The VM records as stored. */
  records(): Promise<string[]>;
}

/** Runs `body` against a fresh inventory on SQLite; `wrap` sees the store first. */
async function withNode(body: (n: Node) => Promise<void>, wrap = (s: KvStore) => s) {
  const dir = mkdtempSync(join(tmpdir(), "dv-vanished-"));
  const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const store = wrap(real);
  const clock = createManualClock(Date.now());
  const inventory = createInventory({
    store,
    clock: clock as Clock,
    heartbeatTtlMs: 30_000,
    logger: silentLogger,
  });
  let at = Math.floor(clock.now() / 1000) - 5000;
  const reportAt = (stamp: number, ids: readonly string[]) =>
    inventory.heartbeat(
      create(HealthSchema, {
        nodeId: { id: "n1" },
        timestamp: { seconds: BigInt(stamp) },
        vms: ids.map((id) => ({ id, name: id, state: VmState.RUNNING, vcpus: 1 })),
      }),
    );
  const records = async () => {
    const out: string[] = [];
    for await (const kv of rangeAll(real, "vms/")) out.push(kv.key.slice("vms/".length));
    return out.sort();
  };
  try {
    await inventory.register(create(NodeInfoSchema, { id: { id: "n1" } }), "test");
    await body({
      inventory,
      store,
      clock,
      report: (...ids) => reportAt(++at, ids),
      reportAt,
      records,
    });
  } finally {
    inventory.close();
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("records a node's reports wrote on its word alone", () => {
  it("stay when a report stops listing them: a tenant does not create over them", async () => {
    await withNode(async ({ report, records, inventory }) => {
      await report("web-1", "db-1");
      await report("db-1");
      assert.deepEqual(await records(), ["db-1", "web-1"], "web-1's record stays");
      const outcome = await createVmLocator(inventory)
        .refuseExisting("web-1", "acme", true, AbortSignal.timeout(20_000))
        .then(
          () => "allowed",
          (e: unknown) => (e instanceof RpcError ? e.reason : String(e)),
        );
      assert.equal(outcome, "VM_EXISTS");
    });
  });

  it("go with the node when it is removed (review)", async () => {
    await withNode(async ({ report, inventory, clock }) => {
      const signal = AbortSignal.timeout(20_000);
      await report("web-1");
      // The operator's remedy for a stolen certificate: revoked, cordoned out of service, removed.
      await inventory.cordon("n1", true, signal, true);
      clock.advance(120_000);
      await removeNode(inventory, "n1", signal);
      const outcome = await createVmLocator(inventory)
        .refuseExisting("web-1", "acme", true, signal)
        .then(
          () => "allowed",
          (e: unknown) => (e instanceof RpcError ? e.reason : String(e)),
        );
      assert.equal(outcome, "allowed", "acme may create web-1 after n1 was removed");
    });
  });
});

describe("first claims of VMs no record holds", () => {
  it("are not spent by reports whose content is ignored (review)", async () => {
    await withNode(async ({ reportAt, inventory, clock }) => {
      const now = Math.floor(clock.now() / 1000);
      const ids = Array.from({ length: 50 }, (_, i) => `vm-${i}`);
      assert.equal(await reportAt(now - 10, []), true);
      // The node's clock stepped back 10 minutes: its reports (50 VMs defined meanwhile) are
      // older than the stored one, their content ignored, 20 of them.
      for (let i = 0; i < 20; i++) assert.equal(await reportAt(now - 600 + i, ids), false);
      // Its clock is right again: the report is stored and places its VMs.
      assert.equal(await reportAt(now, ids), true);
      const facts = await inventory.vmRecords.all();
      const placed = ids.filter((id) => facts.get(id) !== undefined);
      assert.equal(placed.length, 50, `VMs placed by the first report stored: ${placed.length}`);
    });
  });

  it("are not spent by a VM that comes and goes under one name (review)", async () => {
    await withNode(async ({ report, inventory }) => {
      for (let i = 0; i < 1001; i++) {
        await report("db-1", "ci-1");
        await report("db-1");
      }
      await report("db-1", "ci-1", "new-1");
      const facts = await inventory.vmRecords.all();
      const placed = ["db-1", "ci-1", "new-1"].filter((id) => facts.get(id) !== undefined);
      assert.deepEqual(placed, ["db-1", "ci-1", "new-1"], "every VM the node lists is placed");
    });
  });
});
