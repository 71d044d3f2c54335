import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  Untold,
} from "../gen/debvisor/store/v1/records_pb.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { createSqliteStore, encodeMessage, getMessage, type KvStore } from "../store/index.js";
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
    const store = await storeWith(
      create(MigrationRecordSchema, {
        migration: { migrationId: "m-1", state: MigrationState.FAILED },
        runner: "me",
        untold: Untold.SETTLED,
      }),
    );
    try {
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
      for (pass = 0; pass < 150; pass++) {
        for (const p of pending.filter((p) => pass - p.at >= 3)) {
          p.refuse();
          pending.splice(pending.indexOf(p), 1);
        }
        await setImmediate();
        await tell.tellLeftUntold(await listed(store));
      }
      // Asked at waits of 2, 4, 8, 16, 32, 64 passes (plus 3 each to refuse): about 7 times.
      // Started again at 2 after each refusal, it was asked every 7 passes: over 20 times.
      assert.ok(asked >= 3 && asked <= 9, `asked ${asked} times in 150 passes`);
    } finally {
      await store.close();
    }
  });

  it("a record handed off by a daemon whose trail hangs goes to a daemon whose trail works, even when both read each pass at once", async () => {
    const store = await storeWith(
      create(MigrationRecordSchema, {
        migration: { migrationId: "m-1", state: MigrationState.FAILED },
        runner: "A",
        untold: Untold.SETTLED,
      }),
    );
    try {
      const told: string[] = [];
      const a = createMigrationSettleTell({
        store,
        logger: silentLogger,
        runners: { id: "A", isAlive: async () => true },
        tellTimeoutMs: 5,
        onSettled: () => new Promise<void>(() => {}),
        onRestarted: undefined,
      });
      const b = createMigrationSettleTell({
        store,
        logger: silentLogger,
        runners: { id: "B", isAlive: async () => true },
        onSettled: (job) => {
          told.push(job.id);
        },
        onRestarted: undefined,
      });
      for (let pass = 0; pass < 300 && told.length === 0; pass++) {
        // Both read the list, then A acts first: the order that let A take it back at once.
        const all = await listed(store);
        await a.tellLeftUntold(all);
        await b.tellLeftUntold(all);
        await sleep(2);
      }
      assert.deepEqual(told, ["m-1"], "told by the daemon whose trail works");
    } finally {
      await store.close();
    }
  });

  it("a daemon without a trail neither takes nor clears a mark, also a failed restart's", async () => {
    const record = create(MigrationRecordSchema, {
      migration: {
        migrationId: "m-1",
        state: MigrationState.FAILED,
        kind: MigrationKind.FAILOVER,
      },
      runner: "dead",
      untold: Untold.FAILOVER,
    });
    const store = await storeWith(record);
    try {
      const tell = createMigrationSettleTell({
        store,
        logger: silentLogger,
        runners: { id: "C", isAlive: async () => false },
        onSettled: undefined,
        onRestarted: undefined,
      });
      for (let pass = 0; pass < 6; pass++) await tell.tellLeftUntold(await listed(store));
      await sleep(20);
      const after = await getMessage(store, MigrationRecordSchema, `${MIGRATION_RECORDS}m-1`);
      assert.equal(after?.message.untold, Untold.FAILOVER, "still marked");
      assert.equal(after?.message.runner, "dead", "not taken");
    } finally {
      await store.close();
    }
  });
});

/** A store holding `record` (under its migration id). */
async function storeWith(record: MigrationRecord) {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-settle-tell-")), "state.db"),
    logger: silentLogger,
  });
  const id = record.migration?.migrationId ?? "";
  await store.put(`${MIGRATION_RECORDS}${id}`, encodeMessage(MigrationRecordSchema, record));
  return store;
}

/** The records of `store` as a pass lists them. */
async function listed(store: KvStore) {
  return (await createMigrationRecords(store).list()).map(({ record, modRevision }) => ({
    job: jobOf(record) ?? assert.fail("a job"),
    modRevision,
  }));
}
