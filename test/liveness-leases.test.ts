import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createNodeLiveness } from "../src/cluster/index.js";
import { silentLogger, systemClock } from "../src/core/index.js";
import { NodeRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { IN_CI } from "./helpers/required-tools.js";

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
  const etcd: EtcdServer | undefined = await startEtcd().catch((err: unknown) => {
    if (IN_CI) throw err;
    return undefined;
  });
  if (etcd === undefined) {
    console.log("!!! etcd is not installed: the liveness lease tests are SKIPPED.");
    return;
  }
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
});
