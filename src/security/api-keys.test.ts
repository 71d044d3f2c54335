import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
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

  it("leaves no working successor of a key revoked while it was being rotated", async () => {
    const inner = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-keys-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const clock = createManualClock(Date.now());
      let revokeFirst: (() => Promise<unknown>) | undefined;
      // The revocation lands between rotate's check of the old key and its successor's write.
      const store: KvStore = Object.create(inner, {
        txn: {
          value: async (req: Parameters<KvStore["txn"]>[0]) => {
            const hook = revokeFirst;
            revokeFirst = undefined;
            await hook?.();
            return inner.txn(req);
          },
        },
      });
      const keys = createApiKeys(store, clock);
      const k = await keys.create({ principal: "ci", roles: ["viewer"], createdBy: "t" });
      revokeFirst = () => keys.revoke(k.record.id);
      const rotated = await keys.rotate(k.record.id, 3_600_000, "t").then(
        (r) => r,
        (e: unknown) => e,
      );
      assert.ok(
        rotated instanceof RpcError && rotated.reason === "APIKEY_REVOKED",
        `rotate answered ${String(rotated)}`,
      );
      assert.ok("failure" in (await keys.verify(k.token)), "the old key is revoked");
      const others = (await keys.list(undefined)).filter((r) => r.id !== k.record.id);
      for (const r of others) assert.notEqual(r.revokedAtMs, 0n, `successor ${r.id} is revoked`);
    } finally {
      await inner.close();
    }
  });
});
