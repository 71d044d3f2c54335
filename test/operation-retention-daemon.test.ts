import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { createAgentOperations, OPERATIONS_PREFIX } from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import {
  OperationKind,
  OperationOutcome,
  OperationResultSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { parseConfig, startDaemon } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { eventually } from "./helpers/eventually.js";

const HOUR = 3_600_000;

describe("the daemon's removal of finished operations", () => {
  it("removes, at start, an operation that ended longer ago than cluster.operationRetentionMs, and keeps a recent one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-op-retention-daemon-"));
    try {
      // Two ended operations in the daemon's store: one 3 h ago, one 1 h ago.
      const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
      for (const [id, agoMs] of [
        ["ended-3h-ago", 3 * HOUR],
        ["ended-1h-ago", 1 * HOUR],
      ] as const) {
        const ops = createAgentOperations(store, createManualClock(Date.now() - agoMs));
        await ops.submit(
          "node-x",
          {
            operationId: id,
            kind: OperationKind.LIST_SNAPSHOTS,
            vmId: "",
            params: {},
            generation: 0n,
          },
          "test",
        );
        await ops.finish(
          "node-x",
          create(OperationResultSchema, { operationId: id, outcome: OperationOutcome.SUCCEEDED }),
        );
      }
      await store.close();

      const daemon = await startDaemon({
        config: parseConfig({
          dev: { enabled: true, dataDir: dir },
          listen: "127.0.0.1:0",
          metrics: { enabled: false },
          panel: { enabled: false },
          log: { level: "silent" },
          cluster: { operationRetentionMs: 2 * HOUR },
        }),
      });
      // Read beside the running daemon, as another SQLite reader (WAL).
      const db = new Database(join(dir, "state.db"), { readonly: true, fileMustExist: true });
      try {
        const prefix = `${OPERATIONS_PREFIX}node-x/`;
        const ids = () =>
          (
            db
              .prepare("SELECT key FROM kv WHERE key > ? AND key < ? ORDER BY key")
              .all(prefix, `${prefix}\uffff`) as { key: string }[]
          ).map((r) => r.key.slice(prefix.length));
        await eventually(async () => assert.deepEqual(ids(), ["ended-1h-ago"]), {
          timeoutMs: 10_000,
        });
      } finally {
        db.close();
        await daemon.shutdown("test");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
