import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import client from "prom-client";
import {
  type ClusterEvent,
  createEventLog,
  createEventRecorder,
  createInventory,
  type EventLog,
  startReadinessEvents,
} from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { parseConfig, startClusterEvents } from "../src/server/index.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";

/** Every key under a prefix, counted page by page. */
async function count(store: KvStore, prefix: string): Promise<number> {
  let n = 0;
  let after: string | undefined;
  for (;;) {
    const page = await store.range(prefix, { after, limit: 1000 });
    n += page.kvs.length;
    if (!page.more) return n;
    after = page.kvs.at(-1)?.key;
  }
}

describe("the event record in the store", () => {
  let store: KvStore;
  const clock = createManualClock(Date.parse("2026-12-01T00:00:00Z"));
  before(() => {
    store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-events-")), "state.db"),
      logger: silentLogger,
    });
  });
  after(() => store.close());

  it("keeps at most maxCount events under a burst, the newest, in the log and per object alike", async () => {
    const log = createEventLog({ store, clock, maxCount: 100, maxAgeMs: 86_400_000 });
    const recorder = createEventRecorder({ log, clock, logger: silentLogger, queueMax: 5000 });
    // A bounded burst: 1500 events over 3 objects, every one different.
    for (let i = 0; i < 1500; i++)
      recorder.emit({
        kind: "vm",
        id: `vm-${i % 3}`,
        type: "Placed",
        message: `burst ${i}`,
        source: "test",
        tenant: "",
      });
    await recorder.flush();
    assert.equal(recorder.stats().recorded, 1500);
    assert.equal(await count(store, "events/log/"), 100);
    assert.equal(await count(store, "events/by-object/"), 100);
    const newest = await log.tail({}, 100, () => true);
    assert.equal(newest.events.length, 100);
    assert.equal(newest.events[0]?.record.message, "burst 1400");
    assert.equal(newest.events[99]?.record.message, "burst 1499");
    // One object's own lookup sees only its own (every third of the newest hundred: 1400, 1403, ... 1499).
    const one = await log.tail({ kind: "vm", id: "vm-2" }, 1000, () => true);
    assert.ok(one.events.every((e) => e.record.objectId === "vm-2"));
    assert.equal(one.events.length, 34);
    await recorder.close();
  });

  it("removes events past maxAgeMs, also when nothing new is written", async () => {
    const log: EventLog = createEventLog({ store, clock, maxCount: 10_000, maxAgeMs: 60_000 });
    const before = await count(store, "events/log/");
    clock.advance(120_000);
    await log.append([]);
    const left = await count(store, "events/log/");
    assert.ok(left < before && left > 0, `one write removes a bounded head (${before} -> ${left})`);
    for (let i = 0; i < 5; i++) await log.prune();
    assert.equal(await count(store, "events/log/"), 0);
    assert.equal(await count(store, "events/by-object/"), 0);
  });

  it("drops events when its queue is full, never blocking, and counts them in the metric", async () => {
    const registry = new client.Registry();
    const events = startClusterEvents({
      config: parseConfig({ cluster: { events: { queueMax: 10 } } }),
      store,
      clock,
      logger: silentLogger,
      registry,
    });
    const started = performance.now();
    for (let i = 0; i < 50; i++)
      events.recorder.emit({
        kind: "node",
        id: "n1",
        type: "Cordoned",
        message: `m${i}`,
        source: "test",
      });
    assert.ok(performance.now() - started < 100, "emitting never waits for the store");
    await events.recorder.flush();
    const text = await registry.metrics();
    assert.match(text, /^debvisor_events_dropped_total\{reason="queue_full"\} 40$/m);
    assert.match(text, /^debvisor_events_dropped_total\{reason="store_error"\} 0$/m);
    assert.match(text, /^debvisor_events_recorded_total 10$/m);
    await events.recorder.close();
  });

  it("tells a node going not ready, then fenced, once across two daemons sharing the store", async () => {
    const told: ClusterEvent[] = [];
    const sink = { emit: (e: ClusterEvent) => told.push(e) };
    // Two daemons: each its own inventory and observer, one store.
    const daemons = [0, 1].map(() => {
      const inventory = createInventory({ store, clock, heartbeatTtlMs: 3000 });
      return {
        inventory,
        observer: startReadinessEvents({
          store,
          inventory,
          events: sink,
          logger: silentLogger,
          fenceDelayMs: 5000,
          intervalMs: 3_600_000,
        }),
      };
    });
    const [a, b] = daemons as [(typeof daemons)[0], (typeof daemons)[0]];
    await a.inventory.register(create(NodeInfoSchema, { id: { id: "hv1" } }), "test");
    await a.inventory.heartbeat(
      create(HealthSchema, {
        nodeId: { id: "hv1" },
        timestamp: { seconds: BigInt(Math.floor(clock.now() / 1000)), nanos: 0 },
      }),
    );
    // Both look at once: each reads the mark before either moves it.
    const look = () => Promise.all([a.observer.tick(), b.observer.tick()]);
    await look();
    clock.advance(4000); // past the TTL: not ready
    await look();
    await look();
    clock.advance(6000); // not ready past the fence delay
    await look();
    await look();
    assert.deepEqual(
      told.filter((e) => e.id === "hv1").map((e) => e.type),
      ["Ready", "NotReady", "Fenced"],
    );
    for (const d of daemons) {
      d.observer.close();
      d.inventory.close();
    }
  });
});
