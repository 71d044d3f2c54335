import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Clock, createManualClock, RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore, type Lease } from "../store/index.js";
import { startFailoverController } from "./failover-controller.js";
import { createInventory, type Inventory } from "./inventory.js";

/** A failover controller on `store` with a 1 s lease, ticked by the test; node-a's driver is `slow`. */
function controllerWith(
  store: KvStore,
  inventory: Inventory,
  clock: Clock,
  slow: HypervisorDriver,
) {
  return startFailoverController({
    store,
    clock,
    logger: silentLogger,
    runnerId: "r1",
    intervalMs: 3_600_000,
    leaseTtlMs: 1_000,
    inventory,
    executors: {
      forNode: (id) => (id === "node-a" ? slow : undefined),
      destination: () => {
        throw new Error("unused");
      },
    },
    engine: {} as never,
    journal: {} as never,
    fenceDelayMs: 1_000,
  });
}

describe("failover controller and stale copies", () => {
  it("keeps its election through removals longer than its lease, and sends another removal to one copy a pass, after its failovers", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-failover-stale-")), "state.db"),
      logger: silentLogger,
    });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 5_000, fenceDelayMs: 1_000 });
    let s = 1000;
    const beat = async (node: string, vms: [string, boolean][]) =>
      inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(s), nanos: 0 },
          vms: vms.map(([id, ha]) =>
            create(VmInfoSchema, { id, name: id, state: VmState.RUNNING, ha }),
          ),
        }),
      );
    for (const n of ["node-a", "node-c", "node-d"])
      await inventory.register(create(NodeInfoSchema, { id: { id: n } }), "o");
    const placed: [string, boolean][] = [
      ["vm-1", false],
      ["vm-2", false],
    ];
    await beat("node-c", placed);
    await beat("node-a", placed); // stale copies of both
    await beat("node-d", [["vm-ha", true]]); // node-d dies now
    // node-a is READY, but each removal takes 1.5 s and fails: longer than the 1 s lease.
    let removals = 0;
    const slow = {
      removeStaleCopy: async () => {
        removals++;
        await sleep(1500);
        throw new RpcError("BACKEND_TIMEOUT");
      },
    } as unknown as HypervisorDriver;
    /** Passes that reached the failovers (each lists the nodes once there). */
    let failoverLoops = 0;
    const counted: Inventory = {
      ...inventory,
      listNodes: (signal) => {
        failoverLoops++;
        return inventory.listNodes(signal);
      },
    };
    const controller = controllerWith(store, counted, clock, slow);
    const elected = async () => (await store.get("controllers/failover"))?.modRevision;
    /** One tick, node-a and node-c reporting, node-d silent. */
    const tick = async (advanceMs: number) => {
      clock.advance(advanceMs);
      s += advanceMs / 1000;
      await beat("node-c", placed);
      await beat("node-a", placed);
      const before = { removals, failoverLoops };
      await controller.tick();
      return { removals: removals - before.removals, loops: failoverLoops - before.failoverLoops };
    };
    try {
      // Both copies get their first removal (3 s in all), then the failovers run.
      assert.deepEqual(await tick(7_000), { removals: 2, loops: 1 });
      const revision = await elected();
      assert.ok(revision !== undefined, "elected");
      assert.deepEqual(await tick(2_000), { removals: 0, loops: 1 }, "still elected");
      // Both due again: one removal a pass, each after the failovers.
      assert.deepEqual(await tick(61_000), { removals: 1, loops: 1 });
      assert.deepEqual(await tick(2_000), { removals: 1, loops: 1 });
      assert.deepEqual(await tick(2_000), { removals: 0, loops: 1 });
      assert.equal(await elected(), revision, "the election was never lost and taken again");
    } finally {
      await controller.close();
      inventory.close();
      await store.close();
    }
  });

  it("after a keepalive that failed during a removal, never calls itself leader without the election, and takes it again", async () => {
    const real = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-renew-adv-")), "state.db"),
      logger: silentLogger,
    });
    /** One transient keep-alive failure (an etcd blip), armed by the test. */
    let failNextKeepAlive = false;
    const wrap = (l: Lease): Lease => ({
      id: l.id,
      ttlMs: l.ttlMs,
      keepAlive: async (o) => {
        if (failNextKeepAlive) {
          failNextKeepAlive = false;
          throw new RpcError("BACKEND_UNAVAILABLE");
        }
        return l.keepAlive(o);
      },
      revoke: (o) => l.revoke(o),
    });
    const store: KvStore = {
      ...real,
      grantLease: async (ttl, o) => {
        const l = await real.grantLease(ttl, o);
        return wrap(l);
      },
    };
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 5_000, fenceDelayMs: 1_000 });
    let s = 1000;
    const beat = (node: string, vms: string[]) =>
      inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(s), nanos: 0 },
          vms: vms.map((id) => create(VmInfoSchema, { id, name: id, state: VmState.RUNNING })),
        }),
      );
    for (const n of ["node-a", "node-c"])
      await inventory.register(create(NodeInfoSchema, { id: { id: n } }), "o");
    let placed = ["vm-1"];
    await beat("node-c", placed);
    await beat("node-a", placed); // a stale copy of vm-1 on node-a
    let removals = 0;
    const slow = {
      removeStaleCopy: async () => {
        removals++;
        failNextKeepAlive = true; // the blip hits the first renewal of this removal
        await sleep(1500);
      },
    } as unknown as HypervisorDriver;
    const controller = controllerWith(store, inventory, clock, slow);
    const holder = async () => {
      const kv = await real.get("controllers/failover");
      return kv === undefined ? undefined : { rev: kv.modRevision, lease: kv.lease };
    };
    try {
      clock.advance(1000);
      await controller.tick(); // elected, first removal to node-a (1.5 s, one keep-alive blip)
      assert.equal(removals, 1);
      // A new stale copy (vm-2 on node-a) appears; ticks go on for 5 s.
      placed = ["vm-1", "vm-2"];
      await beat("node-c", placed);
      await beat("node-a", placed);
      for (let i = 0; i < 10; i++) {
        await sleep(500);
        clock.advance(2000);
        s += 2;
        await beat("node-c", placed);
        await beat("node-a", placed);
        await controller.tick();
      }
      const key = await holder();
      assert.ok(
        !controller.isLeader() || key !== undefined,
        "not leader while nobody holds controllers/failover",
      );
      assert.equal(
        removals,
        2,
        "vm-2's stale copy is removed by the only controller, elected again",
      );
    } finally {
      await controller.close();
      inventory.close();
      await real.close();
    }
  });
});
