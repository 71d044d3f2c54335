import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createFailoverLeadership, LEADER_KEY } from "./failover-leadership.js";

describe("the failover controller's leadership", () => {
  it("asked by several of a pass's VMs at once, grants one lease and answers them all alike", async () => {
    const real = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-failover-leader-")), "state.db"),
      logger: silentLogger,
    });
    let grants = 0;
    // The real store, its lease grants counted.
    const store: KvStore = {
      ...real,
      grantLease(ttl, o) {
        grants++;
        return real.grantLease(ttl, o);
      },
    };
    const stop = new AbortController();
    try {
      const leadership = createFailoverLeadership({
        store,
        logger: silentLogger,
        runnerId: "runner-1",
        ttl: 10_000,
        stop: stop.signal,
      });
      // Two asks before either has its lease: each granted its own, one lost the election
      // to the other (create-if-absent) and said "not leading", and the lease kept alive
      // could be the one the key is not attached to.
      const answers = await Promise.all([leadership.lead(), leadership.lead(), leadership.lead()]);
      assert.deepEqual(answers, [true, true, true]);
      assert.equal(grants, 1);
      assert.ok((await real.get(LEADER_KEY)) !== undefined);
    } finally {
      stop.abort();
      await real.close();
    }
  });
});
