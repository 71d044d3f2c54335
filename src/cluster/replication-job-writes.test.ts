import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { ReplicationJobRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import { StorageBackend, ZfsReplicationPlanSchema } from "../gen/debvisor/v1/storage_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createReplicationJobs } from "./replication-jobs.js";

describe("ReplicationJobs.create", () => {
  it("does not write a job again that was deleted right after it was created", async () => {
    const inner = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-repl-create-")), "state.db"),
      logger: silentLogger,
    });
    let afterCreate: (() => Promise<unknown>) | undefined;
    // An operator's delete lands between the create's transaction and what comes after it.
    const store: KvStore = Object.create(inner, {
      txn: {
        value: async (...args: Parameters<KvStore["txn"]>) => {
          const r = await inner.txn(...args);
          const hook = afterCreate;
          afterCreate = undefined;
          await hook?.();
          return r;
        },
      },
    });
    try {
      const jobs = createReplicationJobs(store);
      const jobId = "nightly";
      afterCreate = () => jobs.delete(jobId);
      const created = await jobs.create(
        create(ReplicationJobRecordSchema, {
          jobId,
          plan: create(ZfsReplicationPlanSchema, {
            jobId,
            dataset: { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" },
            source: { nodeId: { id: "node-a" } },
            target: { nodeId: { id: "node-b" } },
          }),
        }),
        1_000_000,
      );
      assert.equal(created.created, true);
      assert.equal(created.job.job.jobId, jobId);
      assert.equal(await jobs.get(jobId), undefined, "the deleted job stays deleted");
    } finally {
      await inner.close();
    }
  });
});
