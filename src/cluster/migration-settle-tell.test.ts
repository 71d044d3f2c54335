import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setImmediate } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { MigrationRecordSchema, Untold } from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { MIGRATION_RECORDS } from "./migration-record-keys.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettleTell } from "./migration-settle-tell.js";
import { jobOf } from "./migration-wire.js";

/**
 * A trail that refuses slowly (each refusal after some passes) is asked less
 * and less often: the back-off grows while a tell is under way, rather than
 * starting again at its first step after each refusal.
 */
describe("telling a migration's end again", () => {
  it("backs off more at each refusal, also when each refusal comes passes later", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-settle-tell-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const record = create(MigrationRecordSchema, {
        migration: { migrationId: "m-1", state: MigrationState.FAILED },
        runner: "me",
        untold: Untold.SETTLED,
      });
      await store.put(`${MIGRATION_RECORDS}m-1`, encodeMessage(MigrationRecordSchema, record));
      /** Pending tells: each refused 3 passes after it was asked. */
      const pending: { refuse: () => void; at: number }[] = [];
      let pass = 0;
      let asked = 0;
      const tell = createMigrationSettleTell({
        store,
        logger: silentLogger,
        runners: { id: "me", isAlive: async () => true },
        onSettled: () => {
          asked++;
          return new Promise<void>((_resolve, reject) => {
            pending.push({ refuse: () => reject(new Error("refused")), at: pass });
          });
        },
        onRestarted: undefined,
      });
      const records = createMigrationRecords(store);
      for (pass = 0; pass < 150; pass++) {
        for (const p of pending.filter((p) => pass - p.at >= 3)) {
          p.refuse();
          pending.splice(pending.indexOf(p), 1);
        }
        await setImmediate();
        const all = (await records.list()).map(({ record: r, modRevision }) => ({
          job: jobOf(r) ?? assert.fail("a job"),
          modRevision,
        }));
        await tell.tellLeftUntold(all);
      }
      // Asked at waits of 2, 4, 8, 16, 32, 64 passes (plus 3 each to refuse): about 7 times.
      // Started again at 2 after each refusal, it was asked every 7 passes: over 20 times.
      assert.ok(asked >= 3 && asked <= 9, `asked ${asked} times in 150 passes`);
    } finally {
      await store.close();
    }
  });
});
