import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore, encodeMessage, getMessage } from "../store/index.js";
import { removeStaleCopies, type StaleCopyDecision } from "./stale-copies.js";

describe("removeStaleCopies", () => {
  it("leaves a stale copy alone while a migration of the vm holds its lock or its placed node does not hold it, and removes it once both are over", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
      logger: silentLogger,
    });
    try {
      // vm-1 is placed on node-c; node-a reported a stopped copy (a failover's leftover).
      const rec = create(VmRecordSchema, {
        id: "vm-1",
        nodeId: "node-c",
        generation: 2n,
        staleCopies: [{ nodeId: "node-a", generation: 2n }],
      });
      await store.put("vms/vm-1", encodeMessage(VmRecordSchema, rec));
      // A migration of vm-1 from node-c to node-a is under way: the copy's node is its target.
      await store.put("migration-locks/vm-1", new TextEncoder().encode("m-1"));
      const stops: string[] = [];
      const driver = {
        stop: async (vmId: string) => {
          stops.push(vmId);
        },
      } as unknown as HypervisorDriver;
      const decisions: StaleCopyDecision[] = [];
      let placedHolds = true;
      const pass = async () => {
        const got = await getMessage(store, VmRecordSchema, "vms/vm-1");
        await removeStaleCopies(
          {
            store,
            conflicts: async () => (got === undefined ? [] : [got.message]),
            executors: {
              forNode: (id) => (id === "node-a" ? driver : undefined),
              destination: () => {
                throw new Error("not used");
              },
            },
            elected: { key: "controllers/failover", modRevision: 0 },
            holds: async (nodeId, vmId) => nodeId === "node-c" && vmId === "vm-1" && placedHolds,
            decide: (d) => decisions.push(d),
          },
          AbortSignal.timeout(5000),
        );
      };
      await pass();
      assert.deepEqual(stops, [], "no stop sent to the migration's target");
      const kept = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(kept?.message.staleCopies[0]?.cleanupSent, false, "to be looked at again");
      await store.delete("migration-locks/vm-1");
      // node-c, where vm-1 is placed, does not report it: node-a's copy may be the only one.
      placedHolds = false;
      await pass();
      assert.deepEqual(stops, [], "never the last copy");
      placedHolds = true;
      await pass();
      assert.deepEqual(stops, ["vm-1"]);
      assert.equal(decisions[0]?.action, "removed");
    } finally {
      await store.close();
    }
  });
});
