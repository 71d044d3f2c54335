import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type Clock, createManualClock, RpcError, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory } from "./inventory.js";

const info = (id: string, hostname = `${id}.example`) =>
  create(NodeInfoSchema, { id: { id }, hostname });
const beat = (id: string, atSeconds: number, cpuLoad = 1) =>
  create(HealthSchema, {
    nodeId: { id },
    cpuLoad,
    timestamp: { seconds: BigInt(atSeconds), nanos: 0 },
  });

function inventory(clock: Clock = createManualClock(0), heartbeatTtlMs?: number) {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-inv-")), "state.db"),
    logger: silentLogger,
  });
  return createInventory({ store, clock, heartbeatTtlMs });
}

const fails = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;

describe("inventory", () => {
  it("treats re-registration by the same identity as an update", async () => {
    const inv = inventory();
    assert.equal((await inv.register(info("n1"), "alice")).created, true);
    assert.equal((await inv.register(info("n1", "renamed"), "alice")).created, false);
    assert.equal((await inv.listNodes())[0]?.info?.hostname, "renamed");
  });

  it("refuses another identity claiming an existing node id", async () => {
    const inv = inventory();
    await inv.register(info("n1"), "alice");
    await assert.rejects(inv.register(info("n1"), "mallory"), fails("NODE_ID_TAKEN"));
    assert.equal((await inv.listNodes())[0]?.info?.hostname, "n1.example");
  });

  it("gives a contested node id to exactly one of many concurrent registrations", async () => {
    const inv = inventory();
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => inv.register(info("n1", `h${i}`), `owner-${i}`)),
    );
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
    assert.ok(outcomes.every((o) => o.status === "fulfilled" || fails("NODE_ID_TAKEN")(o.reason)));
  });

  it("answers NOT_FOUND for a heartbeat of an unknown node", async () => {
    await assert.rejects(inventory().heartbeat(beat("ghost", 1)), fails("NODE_NOT_FOUND"));
  });

  it("never lets an older heartbeat overwrite a newer one", async () => {
    const inv = inventory();
    await inv.register(info("n1"), "a");
    assert.equal(await inv.heartbeat(beat("n1", 200, 5)), true);
    assert.equal(await inv.heartbeat(beat("n1", 100, 9)), false);
    assert.equal((await inv.listNodes())[0]?.health?.cpuLoad, 5);
  });

  it("reports READY while heartbeats are within the TTL and NOT_READY after", async () => {
    const clock = createManualClock(1_000_000);
    const inv = inventory(clock, 30_000);
    await inv.register(info("n1"), "a");
    assert.equal(
      (await inv.listNodes())[0]?.readiness,
      NodeReadiness.NOT_READY,
      "never heard from",
    );
    await inv.heartbeat(beat("n1", 1000));
    clock.advance(30_000);
    assert.equal((await inv.listNodes())[0]?.readiness, NodeReadiness.READY);
    clock.advance(1);
    const node = (await inv.listNodes())[0];
    assert.equal(node?.readiness, NodeReadiness.NOT_READY);
    assert.equal(node?.heartbeatAgeMs, 30_001n);
  });

  it("lists nodes sorted by id", async () => {
    const inv = inventory();
    for (const id of ["c", "a", "b"]) await inv.register(info(id), "x");
    assert.deepEqual(
      (await inv.listNodes()).map((n) => n.info?.id?.id),
      ["a", "b", "c"],
    );
  });
});
