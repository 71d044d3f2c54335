// A migration's lock taken between the heartbeat's read of it (before the report is
// placed) and the report's transaction: the claim fails on the lock, and the retry
// claims nothing rather than failing the same way eight times (found by review).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage, type KvStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";

describe("a migration lock taken right after a heartbeat read it", () => {
  it("takes no placement, and the heartbeat is still recorded (not CONFLICT after 8 tries)", async () => {
    const real = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-review-race-")), "state.db"),
      logger: silentLogger,
    });
    let txns = 0;
    let race = false;
    // The real store; the first read of vm-1's lock is followed at once by a migration's begin.
    const store = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === "get")
          return async (...args: Parameters<KvStore["get"]>) => {
            const got = await target.get(...args);
            if (race && args[0] === `${MIGRATION_LOCKS}vm-1`) {
              race = false;
              await target.put(`${MIGRATION_LOCKS}vm-1`, new TextEncoder().encode("m-1"));
            }
            return got;
          };
        if (prop === "txn")
          return (...args: Parameters<KvStore["txn"]>) => {
            txns++;
            return target.txn(...args);
          };
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    }) as KvStore;
    const inv = createInventory({ store, clock: createManualClock(1_000_000) });
    for (const id of ["a", "b"])
      await inv.register(create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` }), id);
    await real.put(
      "vms/vm-1",
      encodeMessage(
        VmRecordSchema,
        create(VmRecordSchema, {
          id: "vm-1",
          tenant: "acme",
          nodeId: "a",
          generation: 7n,
          managed: true,
          confirmedNode: "a",
          confirmedGeneration: 7n,
        }),
      ),
    );
    let second = 0;
    const report = (node: string, vms: string[]) =>
      inv.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(++second) },
          vms: vms.map((id) => ({ id, state: VmState.RUNNING, nodeId: { id: node } })),
        }),
      );
    await report("a", []);
    race = true;
    txns = 0;
    const outcome = await report("b", ["vm-1"]).then(
      () => "recorded",
      (err: Error) => `${err.message} after ${txns} txns`,
    );
    const rec = (await getMessage(real, VmRecordSchema, "vms/vm-1"))?.message;
    assert.equal(rec?.nodeId, "a", "the migration's placement stands");
    assert.equal(outcome, "recorded", "b's heartbeat is recorded");
    await real.close();
  });
});
