import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createNodeLiveness } from "../src/cluster/index.js";
import { createManualClock, silentLogger, systemClock } from "../src/core/index.js";
import { NodeRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";

/** A real etcd store that counts the leases it grants (each one a raft proposal). */
function countingGrants(store: KvStore): { store: KvStore; grants: () => number } {
  let grants = 0;
  return {
    store: {
      ...store,
      grantLease: (ttlMs, opts) => {
        grants++;
        return store.grantLease(ttlMs, opts);
      },
    },
    grants: () => grants,
  };
}

describe("node liveness leases on etcd", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  after(() => etcd.stop());

  it("renews a node's leases with keepalives after the first heartbeat, whichever daemon receives it", async () => {
    const prefix = `/liveness-leases-${Date.now()}/`;
    const stores = [
      createEtcdStore({ endpoints: [etcd.endpoint], prefix }),
      createEtcdStore({ endpoints: [etcd.endpoint], prefix }),
    ];
    const [a, b] = stores.map(countingGrants);
    if (a === undefined || b === undefined) throw new Error("two stores");
    const liveness = (store: KvStore) =>
      createNodeLiveness({
        source: "lease",
        store,
        clock: systemClock,
        ttlMs: 30_000,
        fenceDelayMs: 60_000,
        logger: silentLogger,
      });
    const [la, lb] = [liveness(a.store), liveness(b.store)];
    const rec = (id: string) => create(NodeRecordSchema, { info: { id: { id } } });
    try {
      // B follows the keys before A writes them: it learns them from its watch.
      await lb.ready();
      await la.renew("n1");
      assert.equal(a.grants(), 2, "the first heartbeat grants the READY and the fence leases");
      // At once again (its watch may not have brought A's own write back yet), then later.
      await la.renew("n1");
      await eventually(() => lb.view("n1", rec("n1"), Date.now()).ready);
      await la.renew("n1");
      assert.equal(a.grants(), 2, "A's next heartbeats keep its leases alive: no new lease");
      // The node's stream moves to B: B keeps the same leases alive.
      await lb.renew("n1");
      await lb.renew("n1");
      assert.equal(b.grants(), 0, "B renews the leases A granted, learned from its watch");
      assert.equal(la.view("n1", rec("n1"), Date.now()).ready, true);
    } finally {
      la.close();
      lb.close();
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it("renews the fence lease on every other heartbeat, and it still outlasts TTL + fence delay after each one", async () => {
    const store = createEtcdStore({
      endpoints: [etcd.endpoint],
      prefix: `/fence-every-${Date.now()}/`,
    });
    const ttlMs = 30_000;
    const fenceDelayMs = 60_000;
    /** The TTL each lease was granted with, and the heartbeat times each was renewed at. */
    const granted = new Map<string, number>();
    const renewals = new Map<string, number[]>();
    const clock = createManualClock(1_000_000);
    const counting: KvStore = {
      ...store,
      grantLease: async (ttl, opts) => {
        const lease = await store.grantLease(ttl, opts);
        granted.set(lease.id, ttl);
        renewals.set(lease.id, [clock.now()]);
        return lease;
      },
      lease: (id, ttl) => {
        const lease = store.lease(id, ttl);
        return {
          ...lease,
          keepAlive: (opts) => {
            renewals.get(id)?.push(clock.now());
            return lease.keepAlive(opts);
          },
        };
      },
    };
    const liveness = createNodeLiveness({
      source: "lease",
      store: counting,
      clock,
      ttlMs,
      fenceDelayMs,
      logger: silentLogger,
    });
    try {
      // Heartbeats every 10 s (a third of the TTL), each a little late, as a loaded agent's are.
      const beats: number[] = [];
      for (let i = 0; i < 12; i++) {
        beats.push(clock.now());
        await liveness.renew("n1");
        clock.advance(10_000 + 40);
      }
      assert.equal(granted.size, 2, "one READY and one fence lease");
      const [ready, fence] = [...granted].sort((a, b) => a[1] - b[1]);
      if (ready === undefined || fence === undefined) throw new Error("two leases");
      assert.equal(renewals.get(ready[0])?.length, 12, "the READY lease: every heartbeat");
      const fenced = renewals.get(fence[0]) ?? [];
      assert.equal(
        fenced.length,
        6,
        `the fence lease: every other heartbeat (${fenced.join(", ")})`,
      );
      // Safety: after every heartbeat, the fence lease as last renewed lasts TTL + fence delay longer.
      for (const beat of beats) {
        const last = fenced.filter((t) => t <= beat).at(-1) ?? Number.NaN;
        assert.ok(
          last + fence[1] >= beat + ttlMs + fenceDelayMs,
          `after the heartbeat at ${beat}, the fence lease renewed at ${last} expires too soon`,
        );
      }
    } finally {
      liveness.close();
      await store.close();
    }
  });
});
