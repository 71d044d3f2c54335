import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { createSqliteStore } from "./sqlite-store.js";
import { MAX_WATCH_BACKLOG } from "./watch-queue.js";

describe("the SQLite store's watch from far back", () => {
  it("refuses a history longer than a watch may hold (WATCH_COMPACTED), and serves a shorter one in order", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-sqlite-watch-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const stop = new AbortController();
    try {
      // More events under one prefix than a watch may hold, in few revisions (128 per txn).
      const value = new Uint8Array(8);
      const first = (await store.revision()) + 1;
      for (let n = 0; n <= MAX_WATCH_BACKLOG; n += 128)
        await store.txn({
          compares: [],
          success: Array.from({ length: 128 }, (_, i) => ({
            type: "put" as const,
            key: `events/log/${String(n + i).padStart(7, "0")}`,
            value,
          })),
        });
      const last = await store.revision();
      // A tenant's WatchEvents from since_revision 0 read them all into memory at once.
      const far = store.watch("events/log/", first, { signal: stop.signal });
      await assert.rejects(far[Symbol.asyncIterator]().next(), { reason: "WATCH_COMPACTED" });
      // From the last revision: its 128 events, in order.
      const near = store.watch("events/log/", last, { signal: stop.signal });
      const keys: string[] = [];
      for await (const e of near) {
        keys.push(e.key);
        if (keys.length === 128) break;
      }
      assert.deepEqual(keys, [...keys].sort());
      assert.equal(keys.length, 128);
    } finally {
      stop.abort();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
