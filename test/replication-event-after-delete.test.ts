// A tenant's own replication event stays the tenant's when it deleted the
// job before the event was written (writes are batched behind a queue and
// retried): the recorder asks whose the event is when it is emitted, not
// when it is written. Found by an adversarial review of 16f8704.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  createEventRecorder,
  createEventTenants,
  createInventory,
  createReplicationJobs,
  type EventLog,
  scopedJobId,
} from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import type { EventRecord } from "../src/gen/debvisor/store/v1/event_records_pb.js";
import { ReplicationJobRecordSchema } from "../src/gen/debvisor/store/v1/storage_records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend, ZfsReplicationPlanSchema } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmInfoSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../src/store/index.js";

const disk = { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" };

describe("a tenant's own replication event, written after it deleted its job", () => {
  it("is still the tenant's (its disk never left it)", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ev-delete-")), "s.db"),
      logger: silentLogger,
    });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock });
    try {
      await inventory.register(create(NodeInfoSchema, { id: { id: "node-a" } }), "o");
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "node-a" },
          timestamp: { seconds: 1000n, nanos: 0 },
          vms: [
            create(VmInfoSchema, {
              id: "vm-1",
              name: "vm-1",
              state: VmState.RUNNING,
              disks: [disk],
            }),
          ],
        }),
      );
      await inventory.assignTenant("vm-1", "acme", "admin");
      const jobs = createReplicationJobs(store);
      const jobId = scopedJobId("acme", "nightly");
      await jobs.create(
        create(ReplicationJobRecordSchema, {
          jobId,
          plan: create(ZfsReplicationPlanSchema, {
            jobId,
            dataset: disk,
            source: { nodeId: { id: "node-a" } },
            target: { nodeId: { id: "node-b" } },
          }),
        }),
        1_000_000,
      );
      const tenants = createEventTenants({ inventory, store });
      // The event log is slow for a moment (a busy store): the first write waits.
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const written: EventRecord[] = [];
      let first = true;
      const log = {
        async append(records: readonly EventRecord[]) {
          if (first) {
            first = false;
            await gate;
          }
          written.push(...records);
          return 1;
        },
        prune: async () => 0,
      } as unknown as EventLog;
      const recorder = createEventRecorder({
        log,
        clock,
        logger: silentLogger,
        resolveTenant: (kind, id, signal) => tenants(kind, id, signal),
      });
      // Some other event is being written when the run ends.
      recorder.emit({
        kind: "vm",
        id: "vm-9",
        type: "Moved",
        message: "x",
        source: "t",
        tenant: "",
      });
      await new Promise((r) => setImmediate(r));
      // acme's run over acme's disk succeeds (the runner emits it, tenant left to the recorder).
      recorder.emit({
        kind: "replication",
        id: jobId,
        type: "ReplicationSucceeded",
        message: "sent 4 MiB",
        source: "replication",
      });
      // acme saw SUCCESS on its WatchReplication and deletes its own job.
      await jobs.delete(jobId);
      release();
      await recorder.flush();
      const ev = written.find((r) => r.objectKind === "replication");
      assert.ok(ev !== undefined, "the event is written");
      assert.equal(
        ev.tenant,
        "acme",
        "acme's own run over acme's own disk is filed under \"\" (cluster admins only): acme's ListEvents/WatchEvents never show it",
      );
      await recorder.close();
    } finally {
      inventory.close();
      await store.close();
    }
  });
});
