// An HA VM started again on the node that stopped it while cut off is an act
// of the control plane the audit trail must not lose: its intent is written
// with the start's decision and deleted once the trail took the outcome
// (audit-intents.ts); one left by a controller that died is told as unknown.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import { AuditIntentSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, decodeMessage, encodeMessage, type KvStore } from "../store/index.js";
import { AUDIT_INTENTS, createAuditIntents } from "./audit-intents.js";
import { createFailoverDecisions, type FailoverDecision } from "./failover-decisions.js";
import { createHaRestore, noteSelfFenced } from "./ha-restore.js";
import { type RunnerRegistry, registerRunner } from "./runner-registry.js";

const clock = createManualClock(1_000_000);

async function intents(store: KvStore) {
  const { kvs } = await store.range(AUDIT_INTENTS);
  return kvs.map((kv) => decodeMessage(AuditIntentSchema, kv));
}

/** The intents of runner `runners`, telling HA starts to `tell`. */
function intentsOf(
  store: KvStore,
  runners: RunnerRegistry,
  tell: (d: FailoverDecision) => Promise<void> | void,
) {
  return createAuditIntents({
    store,
    clock,
    logger: silentLogger,
    runners,
    tellHaStart: tell,
    actBoundMs: 1_000,
    tellTimeoutMs: 200,
  });
}

/** An HA restore whose node-a starts run `start`, told to `decide`, its starts kept by `kept`. */
function restoreWith(
  store: KvStore,
  start: () => Promise<unknown>,
  decide: (d: FailoverDecision) => unknown,
  kept: ReturnType<typeof intentsOf>,
) {
  return createHaRestore({
    store,
    executors: {
      forNode: () => ({ start }) as never,
      destination: () => {
        throw new Error("not used");
      },
    },
    elected: () => ({ key: "controllers/failover", modRevision: 0 }),
    restartLimit: 3,
    restartWindowMs: 3_600_000,
    decide,
    intents: kept,
  });
}

/** A store with vm-1 placed on node-a and marked as stopped there by node-a's own fence. */
async function marked(): Promise<KvStore> {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-ha-told-")), "state.db"),
    logger: silentLogger,
  });
  await store.put(
    "vms/vm-1",
    encodeMessage(VmRecordSchema, create(VmRecordSchema, { id: "vm-1", nodeId: "node-a" })),
  );
  assert.equal(await noteSelfFenced(store, "node-a", "vm-1", 0), true);
  return store;
}

const settle = () => new Promise((r) => setTimeout(r, 50));
const STOPPED = create(VmInfoSchema, { id: "vm-1", state: VmState.STOPPED });
const AT_1 = { nodeId: "node-a", reportMs: 1 };

describe("an HA VM's start on the node that stopped it, audited at least once", () => {
  it("is kept as an intent while it runs, and the intent goes once the trail took it", async () => {
    const store = await marked();
    const runners = await registerRunner(store, "r-one", 10_000, silentLogger);
    const told: string[] = [];
    let during: unknown[] = [];
    try {
      const ha = restoreWith(
        store,
        async () => {
          during = await intents(store);
        },
        (d) => void told.push(`${d.vmId} ${d.action}`),
        intentsOf(store, runners, () => assert.fail("not told again")),
      );
      await ha.restore(AT_1, STOPPED, 1_000, AbortSignal.timeout(5000));
      ha.close();
      assert.equal(during.length, 1, "the intent was written before the start ran");
      assert.deepEqual(told, ["vm-1 restarted"]);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(await intents(store), []);
    } finally {
      await runners.close();
      await store.close();
    }
  });

  it("a start whose controller died before telling it is told by the next as unknown; one refused is told again as it was", async () => {
    for (const died of [true, false]) {
      const store = await marked();
      const first = await registerRunner(store, "r-first", 10_000, silentLogger);
      const second = await registerRunner(store, "r-second", 10_000, silentLogger);
      const told: FailoverDecision[] = [];
      const stop = new AbortController();
      try {
        // Died: the start never answers, and its process goes. Refused: the trail refuses
        // the start's record (the outcome is kept), and its process goes.
        const ha = restoreWith(
          store,
          () => (died ? new Promise(() => {}) : Promise.resolve()),
          () => {
            throw new Error("the trail refused the record");
          },
          intentsOf(store, first, () => {}),
        );
        const restoring = ha.restore(AT_1, STOPPED, 1_000, stop.signal);
        if (!died) await restoring;
        await new Promise((r) => setTimeout(r, 50));
        assert.equal((await intents(store)).length, 1, "kept");
        await first.close();

        const next = intentsOf(store, second, (d) => void told.push(d));
        await next.tellLeft(AbortSignal.timeout(5000));
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(
          told.map((d) => `${d.vmId} ${d.node} ${d.action}`),
          [`vm-1 node-a ${died ? "unknown" : "restarted"}`],
        );
        assert.match(
          told[0]?.detail ?? "",
          died
            ? /^started again on node-a, which had stopped it while cut off: start sent; control-plane process r-first did not record it told/
            : /^started again on node-a, which had stopped it while cut off$/,
        );
        assert.match(told[0]?.requestId ?? "", /^[0-9a-f-]{36}$/, "under the start's id");
        assert.deepEqual(await intents(store), [], "deleted once told");
        await next.tellLeft(AbortSignal.timeout(5000));
        assert.equal(told.length, 1, "told once");
        ha.close();
      } finally {
        stop.abort();
        await second.close();
        await store.close();
      }
    }
  });

  it("a start that ran and failed as the one before is still audited; a refusal before anything ran is not repeated; one cut short is unknown", async () => {
    for (const answer of ["BACKEND_FAILED", "FENCED", "cut short", "SHUTTING_DOWN"] as const) {
      const store = await marked();
      const runners = await registerRunner(store, "r-one", 10_000, silentLogger);
      const trail: FailoverDecision[] = [];
      const decisions = createFailoverDecisions({
        logger: silentLogger,
        clock,
        onDecision: (d) => void trail.push(d),
      });
      const kept = intentsOf(store, runners, (d) => void trail.push(d));
      const stop = new AbortController();
      const ha = restoreWith(
        store,
        () => {
          if (answer !== "cut short") return Promise.reject(new RpcError(answer));
          stop.abort();
          return Promise.reject(new RpcError("SHUTTING_DOWN"));
        },
        decisions.decide,
        kept,
      );
      try {
        // Two passes, far enough apart for a node that failed to be asked again.
        for (const now of [1_000, 1_000_000])
          if (!stop.signal.aborted) await ha.restore(AT_1, STOPPED, now, stop.signal);
        await settle();
        await kept.tellLeft(AbortSignal.timeout(5000));
        await settle();
        const told = trail.map((d) => `${d.action}: ${d.detail}`);
        if (answer === "BACKEND_FAILED")
          assert.deepEqual(
            trail.map((d) => d.action),
            ["failed", "failed"],
            `two starts ran, each audited: ${told.join("; ")}`,
          );
        else if (answer === "FENCED")
          assert.deepEqual(
            trail.map((d) => d.action),
            ["failed"],
            "refused alike: told once",
          );
        else if (answer === "cut short")
          assert.deepEqual(told, [
            "unknown: start sent to node-a, cut short by the controller's stop; it may still run",
          ]);
        // The daemon stopping (its calls end at once, the agents' jobs go on): each may run.
        else
          assert.deepEqual(
            told,
            Array(2).fill(
              "unknown: start sent to node-a, cut short by the controller's stop; it may still run",
            ),
          );
        assert.deepEqual(await intents(store), [], answer);
      } finally {
        ha.close();
        await runners.close();
        await store.close();
      }
    }
  });
});
