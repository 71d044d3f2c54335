import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import { createSqliteStore } from "./sqlite-store.js";

describe("SQLite leases", () => {
  it("does not renew a lease past its expiry, though the sweep has not ended it yet", async () => {
    const clock = createManualClock(Date.now());
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-leases-")), "state.db"),
      logger: silentLogger,
      clock,
      // The sweep does not run during the test: only keepAlive's own check can refuse.
      leaseSweepMs: 3_600_000,
    });
    try {
      const lease = await store.grantLease(1000);
      await store.put("live/n1", new Uint8Array([1]), { lease: lease.id });
      clock.advance(999);
      await lease.keepAlive();
      clock.advance(1000);
      // As etcd: an expired lease is not brought back (its holder was already seen as gone).
      await assert.rejects(
        lease.keepAlive(),
        (e: unknown) => e instanceof RpcError && e.reason === "LEASE_NOT_FOUND",
      );
    } finally {
      await store.close();
    }
  });
});
