// A stale copy's removal (a forced stop and undefine of a VM's copy) is an
// act of the control plane the audit trail must not lose: its intent is
// written with the removal's go-ahead and deleted once the trail took the
// outcome (audit-intents.ts).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, type ManualClock, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { AuditIntentSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, decodeMessage, type KvStore } from "../store/index.js";
import { AUDIT_INTENTS } from "./audit-intents.js";
import { type FailoverController, startFailoverController } from "./failover-controller.js";
import { createInventory, type Inventory } from "./inventory.js";
import { type RunnerRegistry, registerRunner } from "./runner-registry.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";

const LEASE_MS = 1_000;

interface World {
  readonly store: KvStore;
  readonly clock: ManualClock;
  readonly inventory: Inventory;
  /** The removals node-a was sent. */
  readonly removals: string[];
  /** node-a reports again: without its copy once it was removed. */
  readonly beat: () => Promise<void>;
}

/** vm-1 placed on node-c, with a stale copy on node-a (whose removals succeed). */
async function world(): Promise<World> {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-stale-told-")), "state.db"),
    logger: silentLogger,
  });
  const clock = createManualClock(1_000_000);
  const inventory = createInventory({ store, clock, heartbeatTtlMs: 60_000, fenceDelayMs: 1_000 });
  for (const n of ["node-a", "node-c"])
    await inventory.register(create(NodeInfoSchema, { id: { id: n } }), "o");
  const vms = [create(VmInfoSchema, { id: "vm-1", name: "vm-1", state: VmState.RUNNING })];
  let s = 1000;
  const report = (node: string, on: typeof vms) =>
    inventory.heartbeat(
      create(HealthSchema, { nodeId: { id: node }, timestamp: { seconds: BigInt(s++) }, vms: on }),
    );
  for (const node of ["node-c", "node-a"]) await report(node, vms);
  const removals: string[] = [];
  const beat = async () => {
    await report("node-c", vms);
    await report("node-a", removals.length > 0 ? [] : vms);
  };
  return { store, clock, inventory, removals, beat };
}

/** A controller of `w` as runner `runners.id`, telling stale copies to `onStaleCopy`. */
function controller(
  w: World,
  runners: RunnerRegistry,
  onStaleCopy: ((d: StaleCopyDecision) => Promise<void> | void) | undefined,
  tellTimeoutMs = 200,
): FailoverController {
  const driver = {
    removeStaleCopy: async (vmId: string) => {
      w.removals.push(vmId);
    },
  } as unknown as HypervisorDriver;
  return startFailoverController({
    store: w.store,
    clock: w.clock,
    logger: silentLogger,
    runnerId: runners.id,
    runners,
    intervalMs: 3_600_000,
    leaseTtlMs: LEASE_MS,
    inventory: w.inventory,
    executors: {
      forNode: (id) => (id === "node-a" ? driver : undefined),
      destination: () => {
        throw new Error("unused");
      },
    },
    engine: {} as never,
    journal: {} as never,
    fenceDelayMs: 1_000,
    removalTimeoutMs: 1_000,
    auditTellTimeoutMs: tellTimeoutMs,
    onStaleCopy,
  });
}

async function intents(store: KvStore) {
  const { kvs } = await store.range(AUDIT_INTENTS);
  return kvs.map((kv) => decodeMessage(AuditIntentSchema, kv));
}

/** Ticks `c` (the clock past an act's bound each time) until `done`, at most 40 passes. */
async function tickUntil(w: World, c: FailoverController, done: () => boolean) {
  for (let i = 0; i < 40 && !done(); i++) {
    w.clock.advance(5_000);
    await w.beat();
    await c.tick();
    await new Promise((r) => setTimeout(r, 20));
  }
}

const ofVm = (told: StaleCopyDecision[]) => told.map((d) => `${d.vmId} ${d.node} ${d.action}`);

describe("a stale copy's removal, audited at least once", () => {
  it("a removal the trail refused is kept with its outcome and told again by a later pass, once", async () => {
    const w = await world();
    const runners = await registerRunner(w.store, "r-one", 10_000, silentLogger);
    const told: StaleCopyDecision[] = [];
    let refused = 0;
    const c = controller(w, runners, (d) => {
      if (refused++ === 0) throw new Error("the trail refused the record");
      told.push(d);
    });
    try {
      await c.tick();
      assert.deepEqual(w.removals, ["vm-1"], "the copy was sent its removal");
      // Refused: the intent stays, with what the removal did.
      await new Promise((r) => setTimeout(r, 50));
      const kept = await intents(w.store);
      assert.equal(kept.length, 1, "the removal kept as an intent");
      assert.equal(kept[0]?.outcome, "removed");
      assert.equal(kept[0]?.runner, "r-one");
      const key = (await w.store.range(AUDIT_INTENTS)).kvs[0]?.key ?? "";
      assert.equal(told.length, 0);

      await tickUntil(w, c, () => told.length > 0);
      assert.deepEqual(ofVm(told), ["vm-1 node-a removed"], "told again, as it happened");
      assert.match(told[0]?.detail ?? "", /stopped and undefined/);
      // Under the act's id, as its first (refused) tell was: a duplicate reads as one act.
      assert.equal(told[0]?.requestId, key.slice(AUDIT_INTENTS.length));
      assert.match(told[0]?.requestId ?? "", /^[0-9a-f-]{36}$/);
      await tickUntil(w, c, () => false);
      assert.deepEqual(await intents(w.store), [], "deleted once told");
      assert.equal(told.length, 1, "told once");
      assert.deepEqual(w.removals, ["vm-1"], "one removal");
    } finally {
      await c.close();
      await runners.close();
      await w.store.close();
    }
  });

  it("a removal whose controller died before the trail took it is told by the next controller as unknown", async () => {
    const w = await world();
    const first = await registerRunner(w.store, "r-first", 10_000, silentLogger);
    const hung = new Promise<void>(() => {});
    // Its tell hangs past the test (a process as good as dead: it never writes the outcome).
    const dying = controller(w, first, () => hung, 600_000);
    const second = await registerRunner(w.store, "r-second", 10_000, silentLogger);
    const told: StaleCopyDecision[] = [];
    let next: FailoverController | undefined;
    try {
      await dying.tick();
      assert.deepEqual(w.removals, ["vm-1"]);
      assert.equal((await intents(w.store)).length, 1);
      // Its process goes: the election and its runner key with it.
      await dying.close();
      await first.close();

      // A controller without a trail leaves it (it could only delete it untold).
      const untrailed = controller(w, second, undefined);
      await untrailed.tick();
      await untrailed.close();
      assert.equal((await intents(w.store)).length, 1, "left by a controller without a trail");

      next = controller(w, second, (d) => void told.push(d));
      const running = next;
      // At once, no clock moved: its runner is gone, so nothing more will come of it.
      await running.tick();
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(ofVm(told), ["vm-1 node-a unknown"]);
      assert.match(
        told[0]?.detail ?? "",
        /^removal of the stale copy on node-a sent; control-plane process r-first did not record it told \(it stopped, or a store write failed\), so its outcome is not known/,
      );
      await tickUntil(w, running, () => false);
      assert.deepEqual(await intents(w.store), []);
      assert.equal(told.length, 1, "told once");
    } finally {
      await next?.close();
      await second.close();
      await w.store.close();
    }
  });

  it("a removal told at once leaves no intent; a controller without a trail writes none", async () => {
    for (const trail of [true, false]) {
      const w = await world();
      const runners = await registerRunner(w.store, "r-one", 10_000, silentLogger);
      const told: StaleCopyDecision[] = [];
      const c = controller(w, runners, trail ? (d) => void told.push(d) : undefined);
      try {
        await c.tick();
        assert.deepEqual(w.removals, ["vm-1"]);
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(ofVm(told), trail ? ["vm-1 node-a removed"] : []);
        assert.deepEqual(await intents(w.store), [], `trail ${trail}`);
      } finally {
        await c.close();
        await runners.close();
        await w.store.close();
      }
    }
  });
});
