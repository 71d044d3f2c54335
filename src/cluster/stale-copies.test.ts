import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { removeStaleCopies, reportedHolding, type StaleCopyDecision } from "./stale-copies.js";

describe("removeStaleCopies", () => {
  it("leaves a stale copy alone while a migration of the vm holds its lock or its placed node does not hold it, and removes it once both are over", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
      logger: silentLogger,
    });
    try {
      // vm-1 is placed on node-c; node-a reported a stopped copy (a failover's leftover).
      const rec = create(VmRecordSchema, {
        id: "vm-1",
        nodeId: "node-c",
        generation: 2n,
        staleCopies: [{ nodeId: "node-a", generation: 2n }],
      });
      await store.put("vms/vm-1", encodeMessage(VmRecordSchema, rec));
      // A migration of vm-1 from node-c to node-a is under way: the copy's node is its target.
      await store.put("migration-locks/vm-1", new TextEncoder().encode("m-1"));
      const stops: string[] = [];
      const driver = {
        stop: async (vmId: string) => {
          stops.push(vmId);
        },
      } as unknown as HypervisorDriver;
      const decisions: StaleCopyDecision[] = [];
      let placedHolds = true;
      const pass = async () => {
        const got = await getMessage(store, VmRecordSchema, "vms/vm-1");
        await removeStaleCopies(
          {
            store,
            conflicts: async () => (got === undefined ? [] : [got.message]),
            executors: {
              forNode: (id) => (id === "node-a" ? driver : undefined),
              destination: () => {
                throw new Error("not used");
              },
            },
            elected: { key: "controllers/failover", modRevision: 0 },
            holds: async (nodeId, vmId) => nodeId === "node-c" && vmId === "vm-1" && placedHolds,
            decide: (d) => decisions.push(d),
          },
          AbortSignal.timeout(5000),
        );
      };
      await pass();
      assert.deepEqual(stops, [], "no stop sent to the migration's target");
      const kept = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(kept?.message.staleCopies[0]?.cleanupSent, false, "to be looked at again");
      await store.delete("migration-locks/vm-1");
      // node-c, where vm-1 is placed, does not report it: node-a's copy may be the only one.
      placedHolds = false;
      await pass();
      assert.deepEqual(stops, [], "never the last copy");
      placedHolds = true;
      await pass();
      assert.deepEqual(stops, ["vm-1"]);
      assert.equal(decisions[0]?.action, "removed");
    } finally {
      await store.close();
    }
  });

  it("does not wait for a removal that hangs (an operation ahead of it on the node, a dead agent) past its bound: told as failed, the pass goes on", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
      logger: silentLogger,
    });
    try {
      for (const id of ["vm-1", "vm-2"])
        await store.put(
          `vms/${id}`,
          encodeMessage(
            VmRecordSchema,
            create(VmRecordSchema, {
              id,
              nodeId: "node-c",
              generation: 2n,
              staleCopies: [{ nodeId: "node-a", generation: 1n }],
            }),
          ),
        );
      const asked: string[] = [];
      // node-a's stops never answer; they end only when their signal does.
      const driver = {
        stop: (vmId: string, o: { signal: AbortSignal }) => {
          asked.push(vmId);
          return new Promise((_, reject) =>
            o.signal.addEventListener("abort", () => reject(o.signal.reason)),
          );
        },
      } as unknown as HypervisorDriver;
      const decisions: StaleCopyDecision[] = [];
      const t0 = Date.now();
      // AbortSignal.timeout does not keep a process alive; a daemon has its server for that.
      const alive = setInterval(() => {}, 50);
      await removeStaleCopies(
        {
          store,
          conflicts: async () =>
            (
              await Promise.all(
                ["vm-1", "vm-2"].map((id) => getMessage(store, VmRecordSchema, `vms/${id}`)),
              )
            ).flatMap((g) => (g === undefined ? [] : [g.message])),
          executors: {
            forNode: (id) => (id === "node-a" ? driver : undefined),
            destination: () => {
              throw new Error("not used");
            },
          },
          elected: { key: "controllers/failover", modRevision: 0 },
          holds: async () => true,
          decide: (d) => decisions.push(d),
          removalTimeoutMs: 200,
        },
        AbortSignal.timeout(20_000),
      ).finally(() => clearInterval(alive));
      assert.deepEqual(asked, ["vm-1", "vm-2"], "the second was asked after the first gave up");
      assert.deepEqual(
        decisions.map((d) => [d.vmId, d.action]),
        [
          ["vm-1", "failed"],
          ["vm-2", "failed"],
        ],
      );
      assert.ok(Date.now() - t0 < 15_000, "well before the pass's own signal");
    } finally {
      await store.close();
    }
  });

  it("takes a node's report as evidence that it holds a vm only while the node is READY", async () => {
    const clock = createManualClock(1_000_000);
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const inventory = createInventory({ store, clock, heartbeatTtlMs: 10_000 });
      await inventory.register(
        create(NodeInfoSchema, { id: { id: "node-d" }, hostname: "d" }),
        "a",
      );
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "node-d" },
          timestamp: { seconds: 1n, nanos: 0 },
          vms: [create(VmInfoSchema, { id: "vm-1", name: "vm-1", state: VmState.RUNNING })],
        }),
      );
      const holds = reportedHolding(inventory);
      assert.equal(await holds("node-d", "vm-1", AbortSignal.timeout(5000)), true);
      assert.equal(await holds("node-d", "vm-2", AbortSignal.timeout(5000)), false);
      // node-d goes silent: its last report still lists vm-1, which may have left it since.
      clock.advance(11_000);
      assert.equal(await holds("node-d", "vm-1", AbortSignal.timeout(5000)), false);
    } finally {
      await store.close();
    }
  });
});
