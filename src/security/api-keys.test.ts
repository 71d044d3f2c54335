import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import { createSqliteStore } from "../store/index.js";
import { createApiKeys } from "./api-keys.js";

describe("ApiKeys.rotate", () => {
  it("refuses to rotate an expired key and issues nothing", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-keys-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const clock = createManualClock(Date.now());
      const keys = createApiKeys(store, clock);
      const k = await keys.create({
        principal: "ci",
        roles: ["viewer"],
        ttlMs: 60_000,
        createdBy: "t",
      });
      clock.advance(60_000);
      await assert.rejects(
        keys.rotate(k.record.id, 3_600_000, "t"),
        (e: unknown) => e instanceof RpcError && e.reason === "APIKEY_EXPIRED",
      );
      assert.equal((await keys.list(undefined)).length, 1, "no successor was made");
      assert.ok("failure" in (await keys.verify(k.token)), "the old key stays dead");
    } finally {
      await store.close();
    }
  });
});
