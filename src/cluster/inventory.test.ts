import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, RpcError } from "../core/index.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { createInventory } from "./inventory.js";

const info = (id: string, hostname = `${id}.example`) =>
  create(NodeInfoSchema, { id: { id }, hostname });
const beat = (id: string, atSeconds: number, cpuLoad = 1) =>
  create(HealthSchema, {
    nodeId: { id },
    cpuLoad,
    timestamp: { seconds: BigInt(atSeconds), nanos: 0 },
  });

describe("inventory", () => {
  it("treats re-registration by the same identity as an update", () => {
    const inv = createInventory({ clock: createManualClock(0) });
    assert.equal(inv.register(info("n1"), "alice").created, true);
    assert.equal(inv.register(info("n1", "renamed"), "alice").created, false);
    assert.equal(inv.listNodes()[0]?.info?.hostname, "renamed");
  });

  it("refuses another identity claiming an existing node id", () => {
    const inv = createInventory({ clock: createManualClock(0) });
    inv.register(info("n1"), "alice");
    assert.throws(
      () => inv.register(info("n1"), "mallory"),
      (e: unknown) => e instanceof RpcError && e.reason === "NODE_ID_TAKEN",
    );
    assert.equal(inv.listNodes()[0]?.info?.hostname, "n1.example");
  });

  it("answers NOT_FOUND for a heartbeat of an unknown node", () => {
    const inv = createInventory({ clock: createManualClock(0) });
    assert.throws(
      () => inv.heartbeat(beat("ghost", 1)),
      (e: unknown) => e instanceof RpcError && e.reason === "NODE_NOT_FOUND",
    );
  });

  it("never lets an older heartbeat overwrite a newer one", () => {
    const inv = createInventory({ clock: createManualClock(0) });
    inv.register(info("n1"), "a");
    assert.equal(inv.heartbeat(beat("n1", 200, 5)), true);
    assert.equal(inv.heartbeat(beat("n1", 100, 9)), false);
    assert.equal(inv.listNodes()[0]?.health?.cpuLoad, 5);
  });

  it("reports READY while heartbeats are within the TTL and NOT_READY after", () => {
    const clock = createManualClock(1_000_000);
    const inv = createInventory({ clock, heartbeatTtlMs: 30_000 });
    inv.register(info("n1"), "a");
    assert.equal(inv.listNodes()[0]?.readiness, NodeReadiness.NOT_READY, "never heard from");
    inv.heartbeat(beat("n1", 1000));
    clock.advance(30_000);
    assert.equal(inv.listNodes()[0]?.readiness, NodeReadiness.READY);
    clock.advance(1);
    const node = inv.listNodes()[0];
    assert.equal(node?.readiness, NodeReadiness.NOT_READY);
    assert.equal(node?.heartbeatAgeMs, 30_001n);
  });

  it("lists nodes sorted by id", () => {
    const inv = createInventory({ clock: createManualClock(0) });
    for (const id of ["c", "a", "b"]) inv.register(info(id), "x");
    assert.deepEqual(
      inv.listNodes().map((n) => n.info?.id?.id),
      ["a", "b", "c"],
    );
  });
});
