import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, type ManualClock, silentLogger } from "../core/index.js";
import { AuditIntentSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore, decodeMessage, encodeMessage, type KvStore } from "../store/index.js";
import { AUDIT_INTENTS, type AuditIntentsOptions, createAuditIntents } from "./audit-intents.js";
import { type RunnerRegistry, registerRunner } from "./runner-registry.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";

const ACT_BOUND_MS = 1_000;
const TELL_TIMEOUT_MS = 500;

function tempStore() {
  return createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-intents-")), "state.db"),
    logger: silentLogger,
  });
}

/** An intent of `runner`'s removal of vm `vmId`'s copy, dated `createdMs` by its writer's clock. */
async function putIntent(store: KvStore, id: string, runner: string, createdMs: number) {
  await store.put(
    `${AUDIT_INTENTS}${id}`,
    encodeMessage(
      AuditIntentSchema,
      create(AuditIntentSchema, {
        runner,
        createdMs: BigInt(createdMs),
        act: {
          case: "staleCopyRemoval",
          value: { vmId: id, nodeId: "node-a", placedOn: "node-c", generation: 3n, tenant: "" },
        },
      }),
    ),
  );
}

function intentsOn(
  store: KvStore,
  clock: ManualClock,
  runners: RunnerRegistry,
  tell: (d: StaleCopyDecision) => Promise<void> | void,
  more: Partial<AuditIntentsOptions> = {},
) {
  return createAuditIntents({
    store,
    clock,
    logger: silentLogger,
    runners,
    tellStaleCopy: tell,
    actBoundMs: ACT_BOUND_MS,
    tellTimeoutMs: TELL_TIMEOUT_MS,
    ...more,
  });
}

/** A store, a clock and this process's runner (r-me), for `body`; closed after it. */
async function inWorld(
  body: (w: { store: KvStore; clock: ManualClock; me: RunnerRegistry }) => Promise<void>,
) {
  const store = tempStore();
  const clock = createManualClock(1_000_000);
  const me = await registerRunner(store, "r-me", 10_000, silentLogger);
  try {
    await body({ store, clock, me });
  } finally {
    await me.close();
    await store.close();
  }
}

/** A trail stalled on its disk: each tell waits until `answer()` (it takes them once it moves). */
function stalledTrail() {
  let asked = 0;
  const waiting: (() => void)[] = [];
  return {
    tell: () => {
      asked++;
      return new Promise<void>((r) => waiting.push(r));
    },
    asked: () => asked,
    answer: () => {
      for (const r of waiting.splice(0)) r();
    },
  };
}

const settle = () => new Promise((r) => setTimeout(r, 30));
const vmsOf = (told: StaleCopyDecision[]) => told.map((d) => `${d.vmId} ${d.action}`).sort();

describe("audit intents left, told by the controller's pass", () => {
  it("an unreadable value is skipped, not a stop: the others are told, and the pass resolves", async () => {
    const store = tempStore();
    const clock = createManualClock(1_000_000);
    const me = await registerRunner(store, "r-me", 10_000, silentLogger);
    try {
      await store.put(`${AUDIT_INTENTS}garbage`, new Uint8Array([0xff, 0xff, 0xff]));
      await putIntent(store, "vm-1", "r-gone", clock.now());
      const told: StaleCopyDecision[] = [];
      const intents = intentsOn(store, clock, me, (d) => void told.push(d));
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.deepEqual(vmsOf(told), ["vm-1 unknown"]);
      assert.equal((await store.range(AUDIT_INTENTS)).kvs.length, 1, "the unreadable one stays");
      // A store that fails the listing: the pass goes on (it resolves).
      const failing: KvStore = Object.create(store, {
        range: { value: () => Promise.reject(new Error("store unavailable")) },
      });
      await intentsOn(failing, clock, me, () => {}).tellLeft(AbortSignal.timeout(5000));
    } finally {
      await me.close();
      await store.close();
    }
  });

  it("waits by its own clock: a living runner's skewed-old intent is left its time; a dead runner's skewed-new one is told at once", async () => {
    const store = tempStore();
    const clock = createManualClock(10_000_000);
    const me = await registerRunner(store, "r-me", 10_000, silentLogger);
    const other = await registerRunner(store, "r-other", 10_000, silentLogger);
    try {
      // r-other lives, its clock an hour behind; r-gone's was an hour ahead.
      await putIntent(store, "vm-live", "r-other", clock.now() - 3_600_000);
      await putIntent(store, "vm-dead", "r-gone", clock.now() + 3_600_000);
      const told: StaleCopyDecision[] = [];
      const intents = intentsOn(store, clock, me, (d) => void told.push(d));
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.deepEqual(vmsOf(told), ["vm-dead unknown"], "the dead runner's at once, only");
      clock.advance(ACT_BOUND_MS + TELL_TIMEOUT_MS - 1);
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.deepEqual(vmsOf(told), ["vm-dead unknown"], "the living one's still left to it");
      clock.advance(1);
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.deepEqual(vmsOf(told), ["vm-dead unknown", "vm-live unknown"]);
    } finally {
      await other.close();
      await me.close();
      await store.close();
    }
  });

  it("its own act, told but its intent not deleted, is told again as it was, not as unknown", async () => {
    const real = tempStore();
    const clock = createManualClock(1_000_000);
    const me = await registerRunner(real, "r-me", 10_000, silentLogger);
    let deletes = 0;
    // The first delete of an intent fails (the store restarting).
    const store: KvStore = Object.create(real, {
      txn: {
        value: (req: Parameters<KvStore["txn"]>[0], o: Parameters<KvStore["txn"]>[1]) =>
          req.success.some((op) => op.type === "delete") && deletes++ === 0
            ? Promise.reject(new Error("store unavailable"))
            : real.txn(req, o),
      },
    });
    try {
      const told: StaleCopyDecision[] = [];
      const intents = intentsOn(store, clock, me, (d) => void told.push(d));
      const act = {
        kind: "staleCopyRemoval" as const,
        vmId: "vm-1",
        node: "node-a",
        placedOn: "node-c",
        generation: 3n,
        tenant: "",
      };
      const intent = intents.intend(act);
      assert.ok(intent);
      await store.txn({ compares: [], success: [intent.op] });
      const outcome = { ...act, action: "removed" as const, detail: "stopped and undefined" };
      told.push(outcome);
      await intents.told(intent.key, Promise.resolve(), outcome);
      assert.equal((await real.range(AUDIT_INTENTS)).kvs.length, 1, "its delete failed");
      clock.advance(ACT_BOUND_MS);
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.deepEqual(vmsOf(told), ["vm-1 removed", "vm-1 removed"], "a duplicate, as it was");
      assert.equal(told[1]?.detail, "stopped and undefined");
      assert.deepEqual((await real.range(AUDIT_INTENTS)).kvs, []);
    } finally {
      await me.close();
      await real.close();
    }
  });

  it("tells at most 32 at once: a trail that hangs does not take a tell per intent left", () =>
    inWorld(async ({ store, clock, me }) => {
      for (let i = 0; i < 100; i++) await putIntent(store, `vm-${i}`, "r-gone", clock.now());
      const trail = stalledTrail();
      const intents = intentsOn(store, clock, me, trail.tell, { tellTimeoutMs: 60_000 });
      for (let pass = 0; pass < 3; pass++) await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      assert.equal(trail.asked(), 32);
    }));

  it("a tell the trail has not answered is not told again meanwhile, though it timed out", () =>
    inWorld(async ({ store, clock, me }) => {
      await putIntent(store, "vm-1", "r-gone", clock.now());
      const trail = stalledTrail();
      const intents = intentsOn(store, clock, me, trail.tell, { tellTimeoutMs: 20 });
      for (let pass = 0; pass < 40; pass++) {
        await intents.tellLeft(AbortSignal.timeout(5000));
        await settle();
      }
      assert.equal(trail.asked(), 1, "one tell, however many passes it took");
      trail.answer();
      await settle();
      // Taken late, after all: its intent goes, and it is not told again.
      assert.deepEqual((await store.range(AUDIT_INTENTS)).kvs, []);
      for (let pass = 0; pass < 70; pass++) await intents.tellLeft(AbortSignal.timeout(5000));
      assert.equal(trail.asked(), 1);
    }));

  it("a pass's tell taken late leaves an intent its runner rewrote meanwhile (with the real outcome)", () =>
    inWorld(async ({ store, clock, me }) => {
      await putIntent(store, "vm-1", "r-gone", clock.now());
      const trail = stalledTrail();
      const intents = intentsOn(store, clock, me, trail.tell, { tellTimeoutMs: 20 });
      await intents.tellLeft(AbortSignal.timeout(5000));
      await settle();
      // Its runner, back, writes what its removal did into the intent.
      const key = `${AUDIT_INTENTS}vm-1`;
      const kv = await store.get(key);
      assert.ok(kv);
      const rewritten = decodeMessage(AuditIntentSchema, kv);
      await store.put(
        key,
        encodeMessage(
          AuditIntentSchema,
          create(AuditIntentSchema, { ...rewritten, outcome: "removed", detail: "done" }),
        ),
      );
      trail.answer();
      await settle();
      assert.equal((await store.range(AUDIT_INTENTS)).kvs.length, 1, "kept, to be told as it was");
    }));
});
