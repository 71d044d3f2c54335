import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, handlerCall, RpcError, silentLogger } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { CreateVmRequestSchema, type VmOperation } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { DATASETS_PREFIX } from "./dataset-access.js";
import { createInventory } from "./inventory.js";
import { createVmService } from "./vm-service.js";

const GIB = 1024n ** 3n;
const shared = create(DatasetRefSchema, {
  backend: StorageBackend.BACKEND_RBD,
  pool: "rbd",
  name: "shared",
});

describe("creates racing for one existing disk", () => {
  it("of several creates naming one existing disk at once, exactly one is written; the others hear DISK_IN_USE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-diskrace-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
    try {
      const createVm = handlerCall<VmOperation>(
        createVmService({ inventory, store, clock }),
        "CreateVm",
      );
      await inventory.register(
        create(NodeInfoSchema, {
          id: { id: "n1" },
          capacity: { cpuCores: 64, memoryBytes: 256n * GIB },
          sharedPools: ["rbd"],
        }),
        "ops",
      );
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "n1" },
          timestamp: { seconds: BigInt(clock.now() / 1000) },
        }),
      );
      await store.put(
        DATASETS_PREFIX + datasetKey(shared),
        encodeMessage(DatasetRecordSchema, create(DatasetRecordSchema, { dataset: shared })),
      );
      const ids = ["a", "b", "c", "d"];
      const outcomes = await Promise.allSettled(
        ids.map((vmId) =>
          createVm(
            create(CreateVmRequestSchema, {
              vmId,
              requestId: `rq-${vmId}`,
              spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: shared }] },
            }),
            undefined,
            "ops",
          ),
        ),
      );
      const written = outcomes.filter((o) => o.status === "fulfilled");
      assert.equal(written.length, 1, "exactly one create is written");
      for (const o of outcomes)
        if (o.status === "rejected") {
          assert.ok(o.reason instanceof RpcError, String(o.reason));
          assert.equal(o.reason.reason, "DISK_IN_USE", o.reason.message);
        }
      const recorded = await inventory.vmRecords.where(
        (rec) => rec.spec?.disks.some((d) => d.dataset?.name === "shared") ?? false,
      );
      assert.equal(recorded.length, 1, "one VM record names the disk");

      // The winner deleted (its record removed, as the delete's settling does): the disk's
      // claim names a VM that is gone, and the next create takes it over.
      const winner = recorded[0]?.rec.id ?? "";
      const gone = await store.delete(`vms/${winner}`);
      inventory.vmRecords.forget(winner, gone.revision);
      const next = await createVm(
        create(CreateVmRequestSchema, {
          vmId: "e",
          requestId: "rq-e",
          spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: shared }] },
        }),
        undefined,
        "ops",
      );
      assert.equal(next.vmId, "e");

      // A new disk named by two creates at once: one is written, the other hears DATASET_EXISTS.
      const fresh = create(DatasetRefSchema, { ...shared, name: "fresh" });
      const both = await Promise.allSettled(
        ["f", "g"].map((vmId) =>
          createVm(
            create(CreateVmRequestSchema, {
              vmId,
              requestId: `rq-${vmId}`,
              spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: fresh, sizeBytes: GIB }] },
            }),
            undefined,
            "ops",
          ),
        ),
      );
      assert.deepEqual(
        both
          .map((o) => (o.status === "fulfilled" ? "written" : (o.reason as RpcError).reason))
          .sort(),
        ["DATASET_EXISTS", "written"],
      );
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
