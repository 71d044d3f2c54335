import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import { datasetKey } from "../drivers/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { CreateVmRequestSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { createDatasetAccess, DATASETS_PREFIX } from "./dataset-access.js";
import { createInventory } from "./inventory.js";
import { createVmDiskCheck } from "./vm-disk-check.js";

const GIB = 1024n ** 3n;
const rbd = (name: string): DatasetRef =>
  create(DatasetRefSchema, { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name });

describe("a VM's disks at creation", () => {
  it("refuses another VM's disk (reported, or named by a managed record), naming that VM only to a caller who may see it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-diskcheck-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const inventory = createInventory({
      store,
      clock: createManualClock(1_000_000),
      heartbeatTtlMs: 30_000,
    });
    try {
      const check = createVmDiskCheck({
        inventory,
        datasets: createDatasetAccess({ inventory, store }),
      });
      await inventory.register(create(NodeInfoSchema, { id: { id: "n1" } }), "test");
      // Reported by n1: a (acme's, stopped) with rbd/a-d0; u (no tenant) with rbd/u-d0.
      const reported = [
        { id: "a", tenant: "acme", disk: "a-d0" },
        { id: "u", tenant: "", disk: "u-d0" },
        { id: "t", tenant: "", disk: "t-d0" },
      ];
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "n1" },
          timestamp: { seconds: 1_000n },
          vms: reported.map((v) => ({
            id: v.id,
            nodeId: { id: "n1" },
            state: VmState.STOPPED,
            disks: [rbd(v.disk)],
          })),
        }),
      );
      await inventory.seedTenants(reported, "test");
      // u's disk was created for acme.
      await store.put(
        DATASETS_PREFIX + datasetKey(rbd("u-d0")),
        encodeMessage(
          DatasetRecordSchema,
          create(DatasetRecordSchema, { dataset: rbd("u-d0"), tenant: "acme" }),
        ),
      );
      // c: created on n1 (managed), not reported yet (its node is down, say).
      await store.put(
        "vms/c",
        encodeMessage(
          VmRecordSchema,
          create(VmRecordSchema, {
            id: "c",
            tenant: "acme",
            nodeId: "n1",
            managed: true,
            spec: { vcpus: 1, memoryBytes: GIB, disks: [{ dataset: rbd("c-d0") }] },
          }),
        ),
      );

      /** The refusal `vmId` naming `disks` (existing ones) meets, for `tenant` (undefined: cluster-wide). */
      const refusal = async (vmId: string, disks: string[], tenant?: string, sizeBytes = 0n) => {
        const req = create(CreateVmRequestSchema, {
          vmId,
          spec: {
            vcpus: 1,
            memoryBytes: GIB,
            disks: disks.map((d) => ({ dataset: rbd(d), sizeBytes })),
          },
        });
        try {
          await check(req, tenant ?? "", tenant !== undefined, AbortSignal.timeout(10_000));
          return "accepted";
        } catch (err) {
          assert.ok(err instanceof RpcError, String(err));
          return `${err.reason}: ${err.message}`;
        }
      };

      assert.equal(
        await refusal("b", ["a-d0"]),
        "DISK_IN_USE: spec.disks[0]: rbd/a-d0 is already the disk of vm a",
      );
      assert.equal(
        await refusal("b", ["a-d0"], "acme"),
        "DISK_IN_USE: spec.disks[0]: rbd/a-d0 is already the disk of vm a",
      );
      // Another tenant does not see the disk at all.
      assert.match(await refusal("b", ["a-d0"], "globex"), /^DATASET_NOT_FOUND/);
      // acme may see u's disk (its dataset record), not u: the VM is not named.
      assert.equal(
        await refusal("b", ["u-d0"], "acme"),
        "DISK_IN_USE: spec.disks[0]: rbd/u-d0 is already the disk",
      );
      // A managed VM not reported anywhere still owns the disks its record names.
      assert.equal(
        await refusal("b", ["c-d0"]),
        "DISK_IN_USE: spec.disks[0]: rbd/c-d0 is already the disk of vm c",
      );
      // The second disk too, not only the first.
      assert.match(await refusal("b", ["free-d0", "a-d0"]), /^DISK_IN_USE: spec\.disks\[1\]/);
      // A new disk must be nobody's: not even a disk of a VM of no tenant, with no dataset record.
      assert.equal(
        await refusal("b", ["t-d0"], undefined, GIB),
        "DATASET_EXISTS: dataset already exists",
      );
      assert.equal(await refusal("b", ["new-d0"], undefined, GIB), "accepted");
      // Another spelling of a's disk (the host resolves it to the same volume) is refused.
      for (const name of ["a-d0/", "./a-d0", "x//a-d0", "x/../a-d0"])
        assert.match(
          await refusal("b", [name]),
          /^INVALID_ARGUMENT: spec\.disks\[0\]\.dataset: pool and name must be plain paths/,
          name,
        );
      // A VM's own disks, and a disk nobody uses, pass.
      assert.equal(await refusal("a", ["a-d0"]), "accepted");
      assert.equal(await refusal("c", ["c-d0"]), "accepted");
      assert.equal(await refusal("b", ["free-d0"]), "accepted");
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
