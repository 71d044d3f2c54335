import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { noteSelfFenced } from "./ha-restore.js";

describe("noteSelfFenced (a node says it stopped an HA vm while cut off)", () => {
  it("marks only a vm placed on that node that nobody asked to stop", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const put = (id: string, nodeId: string, desiredState: VmState) =>
        store.put(
          `vms/${id}`,
          encodeMessage(
            VmRecordSchema,
            create(VmRecordSchema, { id, nodeId, managed: true, desiredState }),
          ),
        );
      await put("vm-run", "node-a", VmState.RUNNING);
      await put("vm-stopped", "node-a", VmState.STOPPED);
      await put("vm-elsewhere", "node-b", VmState.RUNNING);
      assert.equal(await noteSelfFenced(store, "node-a", "vm-run"), true);
      // A tenant stopped it: a node's word (or a stolen node certificate's) does not restart it.
      assert.equal(await noteSelfFenced(store, "node-a", "vm-stopped"), false);
      assert.equal(await noteSelfFenced(store, "node-a", "vm-elsewhere"), false);
      assert.equal(await store.get("failover/vm-stopped"), undefined);
    } finally {
      await store.close();
    }
  });
});
