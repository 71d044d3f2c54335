import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { MigrationRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createMigrationRecords } from "./migration-records.js";

describe("MigrationRecords.finish", () => {
  it("answers a finish that committed, though the pruning after it fails", async () => {
    const inner = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-finish-")), "state.db"),
      logger: silentLogger,
    });
    let listing = true;
    // Listing the records (what the pruning after every 50th finish does) fails on demand.
    const store: KvStore = Object.create(inner, {
      range: {
        value: (...args: Parameters<KvStore["range"]>) => {
          if (!listing) throw new Error("store unavailable for a listing");
          return inner.range(...args);
        },
      },
    });
    try {
      const records = createMigrationRecords(store);
      const outcomes: string[] = [];
      for (let i = 0; i < 50; i++) {
        const recordIn = (state: MigrationState) =>
          create(MigrationRecordSchema, {
            runner: "me",
            migration: {
              migrationId: `m-${i}`,
              vm: { vmId: `vm-${i}` },
              source: { nodeId: { id: "a" } },
              target: { nodeId: { id: "b" } },
              state,
            },
          });
        const record = recordIn(MigrationState.RUNNING);
        const revision = (await records.reserved()).revisions.get("b") ?? 0;
        assert.ok(await records.begin(record, revision), `begin m-${i}`);
        listing = i < 49;
        const done = recordIn(MigrationState.FAILED);
        outcomes.push(
          await records.finish(done).then(
            () => "ok",
            (e: unknown) => String(e),
          ),
        );
        listing = true;
      }
      assert.deepEqual(outcomes, Array(50).fill("ok"), "every finish that committed says so");
      const stored = (await records.list()).find((r) => r.record.migration?.migrationId === "m-49");
      assert.equal(stored?.record.migration?.state, MigrationState.FAILED);
    } finally {
      await inner.close();
    }
  });
});
