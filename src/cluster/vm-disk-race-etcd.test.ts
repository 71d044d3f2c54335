import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { startEtcd } from "../../test/helpers/etcd-server.js";
import { createManualClock, handlerCall, type RpcError } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { CreateVmRequestSchema, type VmOperation } from "../gen/debvisor/v1/vm_pb.js";
import { createEtcdStore, encodeMessage } from "../store/index.js";
import { DATASETS_PREFIX } from "./dataset-access.js";
import { createInventory } from "./inventory.js";
import { createVmService } from "./vm-service.js";

const GIB = 1024n ** 3n;

/**
 * Two control-plane processes' stores and inventories on one etcd (each
 * sees the other's records only through its watch) take creates naming
 * one existing disk at once, three rounds: the disk's claim, compared in
 * each create's transaction, lets exactly one be written.
 */
describe("disk claims across two control-plane processes on etcd", () => {
  it("of creates naming one disk through two processes at once, exactly one is written", async (t) => {
    const etcd = await startEtcd();
    // Not installed: a notice and undefined (under CI=true startEtcd throws instead).
    if (etcd === undefined) return t.skip("etcd is not installed");
    const prefix = "/disk-claims-race/";
    const stores = [0, 1].map(() => createEtcdStore({ endpoints: [etcd.endpoint], prefix }));
    const clock = createManualClock(1_000_000);
    const invs = stores.map((store) => createInventory({ store, clock, heartbeatTtlMs: 30_000 }));
    try {
      await invs[0]?.register(
        create(NodeInfoSchema, {
          id: { id: "n1" },
          capacity: { cpuCores: 64, memoryBytes: 256n * GIB },
          sharedPools: ["rbd"],
        }),
        "ops",
      );
      await invs[0]?.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "n1" },
          timestamp: { seconds: BigInt(clock.now() / 1000) },
        }),
      );
      const results: string[] = [];
      for (const round of [0, 1, 2]) {
        const shared = create(DatasetRefSchema, {
          backend: StorageBackend.BACKEND_RBD,
          pool: "rbd",
          name: `shared-${round}`,
        });
        await stores[0]?.put(
          DATASETS_PREFIX + datasetKey(shared),
          encodeMessage(DatasetRecordSchema, create(DatasetRecordSchema, { dataset: shared })),
        );
        const calls = ["a", "b", "c", "d"].map((v, i) => {
          const store = stores[i % 2];
          const inventory = invs[i % 2];
          if (store === undefined || inventory === undefined) throw new Error();
          const createVm = handlerCall<VmOperation>(
            createVmService({ inventory, store, clock }),
            "CreateVm",
          );
          return createVm(
            create(CreateVmRequestSchema, {
              vmId: `${v}${round}`,
              requestId: `rq-${v}${round}`,
              spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: shared }] },
            }),
            undefined,
            "ops",
          );
        });
        const out = await Promise.allSettled(calls);
        const line = out
          .map((o) =>
            o.status === "fulfilled"
              ? "written"
              : ((o.reason as RpcError).reason ?? String(o.reason)),
          )
          .join(",");
        results.push(line);
      }
      for (const r of results)
        assert.equal(r.split(",").filter((x) => x === "written").length, 1, r);
      for (const r of results)
        for (const x of r.split(",")) assert.ok(x === "written" || x === "DISK_IN_USE", r);
    } finally {
      for (const i of invs) i.close();
      for (const s of stores) await s.close();
      await etcd.stop();
    }
  });
});
