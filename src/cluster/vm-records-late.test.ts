import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { eventually } from "../../test/helpers/eventually.js";
import { silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createVmRecords } from "./vm-records.js";

/**
 * A process notes its own write (`remember`) when its transaction resolves.
 * The watch can bring that write first, and then another process's delete
 * of the record: noted late, the write stood in the view over the delete,
 * for good (nothing brings that key again), and every compare made from
 * the view failed (found by a review, as a suspicion, of the migration
 * engine's compare on the VM's record).
 */
describe("the VM records' view", () => {
  it("takes no note of this process's write that the watch has already brought and gone past", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-vmrecords-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const records = createVmRecords(store, silentLogger);
    try {
      await records.all();
      const rec = create(VmRecordSchema, { id: "v1", nodeId: "n1", generation: 1n });
      const w = records.write(rec, 0);
      const txn = await store.txn({ compares: [w.compare], success: [w.op] });
      assert.ok(txn.succeeded);
      await eventually(async () => assert.ok((await records.all()).get("v1") !== undefined));
      // Another process deletes it; the watch brings the delete.
      const before = records.version();
      await store.delete("vms/v1");
      await eventually(async () => assert.ok(records.version() > before));
      assert.equal((await records.all()).get("v1"), undefined);
      // Only now does this process note its write.
      records.remember(rec, txn.revision);
      assert.equal((await records.all()).get("v1"), undefined, "the delete stands");
      assert.deepEqual(await records.where(() => true), []);
    } finally {
      records.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
