import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { createSqliteStore, encodeMessage, getMessage } from "../store/index.js";
import { createCancelRequests } from "./migration-cancel-requests.js";
import { createMigrationRecords, MIGRATION_RECORDS } from "./migration-records.js";

const record = (id: string, state: MigrationState) =>
  create(MigrationRecordSchema, {
    migration: { migrationId: id, state },
    runner: "runner-1",
  });

describe("cancel requests on migration records", () => {
  it("flag an active migration once, survive its runner's next save, and wake its runner's watch", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-cancel-req-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const cancels = createCancelRequests(store);
      const records = createMigrationRecords(store);
      const put = (id: string, state: MigrationState) =>
        store.put(MIGRATION_RECORDS + id, encodeMessage(MigrationRecordSchema, record(id, state)));
      const flagged = async (id: string) =>
        (await getMessage(store, MigrationRecordSchema, MIGRATION_RECORDS + id))?.message
          .cancelRequested;
      await put("m-run", MigrationState.RUNNING);
      await put("m-done", MigrationState.SUCCEEDED);

      const stop = new AbortController();
      let woken = false;
      const watching = cancels.requested("m-run", stop.signal).then(() => {
        woken = true;
      });
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(woken, false, "not asked yet");
      assert.equal(await cancels.request("m-run"), true);
      await watching;
      assert.equal(woken, true);
      // The runner's progress, written from its own copy (no flag), keeps it.
      await records.save(record("m-run", MigrationState.RUNNING));
      assert.equal(await flagged("m-run"), true, "the runner's save kept the request");
      // A runner that starts watching after the request sees it at once.
      // Without looking at the record first it would wait for a change that never comes: the
      // signal ends it with an error (10 s: two store reads on a loaded machine are not instant).
      await cancels.requested("m-run", AbortSignal.timeout(10_000));

      assert.equal(await cancels.request("m-done"), false, "finished: nothing to cancel");
      assert.equal(await flagged("m-done"), false);
      assert.equal(await cancels.request("m-gone"), false);
      // A record removed while watched (pruned) ends the watch.
      const gone = cancels.requested("m-done", AbortSignal.timeout(5000));
      await store.delete(`${MIGRATION_RECORDS}m-done`);
      await gone;
      stop.abort();
    } finally {
      await store.close();
    }
  });
});
