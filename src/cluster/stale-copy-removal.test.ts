import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type Clock, createManualClock, RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import {
  OperationPhase,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import {
  createSqliteStore,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  keyValueOf,
} from "../store/index.js";
import { createAgentExecutors } from "./agent-executors.js";
import { createAgentOperations } from "./agent-operations.js";
import type { Inventory } from "./inventory.js";
import {
  createStaleCopyRemover,
  type StaleCopyDecision,
  type StaleCopyRemoverDeps,
} from "./stale-copy-removal.js";
import { placementChange, readPlacement } from "./vm-placement.js";

const ELECTED = { key: "controllers/failover", modRevision: 0 };

/** A stale copy as a test writes it (generation 1, older than the VM's). */
interface CopyFields {
  readonly nodeId: string;
  readonly cleanupSent?: boolean;
  readonly removalRefused?: boolean;
}

/** A store holding `ids`, each placed on node-c (generation 2) with a stale copy (`copy`; default on node-a). */
async function storeWithCopies(
  ids: readonly string[],
  copy: (id: string) => CopyFields = () => ({ nodeId: "node-a" }),
): Promise<KvStore> {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-stale-")), "state.db"),
    logger: silentLogger,
  });
  for (const id of ids)
    await store.put(
      `vms/${id}`,
      encodeMessage(
        VmRecordSchema,
        create(VmRecordSchema, {
          id,
          nodeId: "node-c",
          generation: 2n,
          staleCopies: [{ ...copy(id), generation: 1n }],
        }),
      ),
    );
  return store;
}

/** A remover over `store`'s records of `ids`, with node-a's driver `driver`. */
function remover(
  store: KvStore,
  ids: readonly string[],
  driver: object,
  more: Partial<StaleCopyRemoverDeps> & { clock?: Clock },
) {
  const decisions: StaleCopyDecision[] = [];
  const r = createStaleCopyRemover({
    store,
    clock: more.clock ?? createManualClock(1_000_000),
    conflicts: async () =>
      (await Promise.all(ids.map((id) => getMessage(store, VmRecordSchema, `vms/${id}`)))).flatMap(
        (g) => (g === undefined ? [] : [g.message]),
      ),
    executors: {
      forNode: (id) => (id === "node-a" ? (driver as HypervisorDriver) : undefined),
      destination: () => {
        throw new Error("not used");
      },
    },
    elected: () => ELECTED,
    holds: async () => true,
    ready: async () => true,
    decide: (d) => void decisions.push(d),
    ...more,
  });
  // As the controller does: new copies first, another removal for one copy at the end.
  const pass = async () => {
    await r.pass(AbortSignal.timeout(20_000));
    await r.retry(AbortSignal.timeout(20_000));
  };
  return { pass, decisions };
}

describe("stale copy removal", () => {
  it("leaves a stale copy alone while a migration of the vm holds its lock or its placed node does not hold it, and removes it once both are over", async () => {
    const store = await storeWithCopies(["vm-1"]);
    try {
      // A migration of vm-1 from node-c to node-a is under way: the copy's node is its target.
      await store.put("migration-locks/vm-1", new TextEncoder().encode("m-1"));
      const stops: string[] = [];
      let placedHolds = true;
      const r = remover(
        store,
        ["vm-1"],
        {
          stop: async (vmId: string) => {
            stops.push(vmId);
          },
        },
        { holds: async (nodeId, vmId) => nodeId === "node-c" && vmId === "vm-1" && placedHolds },
      );
      await r.pass();
      assert.deepEqual(stops, [], "no stop sent to the migration's target");
      const kept = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(kept?.message.staleCopies[0]?.cleanupSent, false, "to be looked at again");
      await store.delete("migration-locks/vm-1");
      // node-c, where vm-1 is placed, does not report it: node-a's copy may be the only one.
      placedHolds = false;
      await r.pass();
      assert.deepEqual(stops, [], "never the last copy");
      placedHolds = true;
      await r.pass();
      assert.deepEqual(stops, ["vm-1"]);
      assert.equal(r.decisions[0]?.action, "removed");
    } finally {
      await store.close();
    }
  });

  it("does not wait for a removal that hangs (an operation ahead of it on the node, a dead agent) past its bound: told as failed, the pass goes on", async () => {
    const store = await storeWithCopies(["vm-1", "vm-2"]);
    try {
      const asked: string[] = [];
      // node-a's stops never answer; they end only when their signal does.
      const driver = {
        stop: (vmId: string, o: { signal: AbortSignal }) => {
          asked.push(vmId);
          return new Promise<void>((_, reject) =>
            o.signal.addEventListener("abort", () => reject(o.signal.reason)),
          );
        },
      };
      const r = remover(store, ["vm-1", "vm-2"], driver, { removalTimeoutMs: 200 });
      const t0 = Date.now();
      // AbortSignal.timeout does not keep a process alive; a daemon has its server for that.
      const alive = setInterval(() => {}, 50);
      await r.pass().finally(() => clearInterval(alive));
      assert.deepEqual(asked, ["vm-1", "vm-2"], "the second was asked after the first gave up");
      assert.deepEqual(
        r.decisions.map((d) => [d.vmId, d.action]),
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

  it("sends a copy still listed another removal after 60 s, then at doubling intervals, only to a READY node and only while elected", async () => {
    const store = await storeWithCopies(["vm-1"]);
    try {
      const clock = createManualClock(1_000_000);
      let ready = false;
      /** What node-a is asked, in order; the first removal fails as a lost agent's would. */
      const asked: string[] = [];
      let fail: RpcError | undefined = new RpcError("BACKEND_UNAVAILABLE");
      const driver = {
        removeStaleCopy: async (vmId: string, generation: bigint) => {
          asked.push(`${vmId}@${generation}`);
          const e = fail;
          fail = undefined;
          if (e !== undefined) throw e;
        },
      };
      const r = remover(store, ["vm-1"], driver, { clock, ready: async () => ready });
      await r.pass();
      assert.deepEqual(asked, [], "node-a is not READY: nothing sent, nothing marked");
      const unmarked = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(unmarked?.message.staleCopies[0]?.cleanupSent, false);
      ready = true;
      await r.pass();
      assert.deepEqual(asked, ["vm-1@2"]);
      assert.deepEqual(
        r.decisions.map((d) => d.action),
        ["failed"],
      );
      const marked = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(marked?.message.staleCopies[0]?.cleanupSent, true);
      // The copy is still listed (node-a still reports it): sent again only after 60 s.
      await r.pass();
      clock.advance(59_000);
      await r.pass();
      assert.equal(asked.length, 1, "not before 60 s");
      clock.advance(2_000);
      ready = false;
      await r.pass();
      assert.equal(asked.length, 1, "not to a node that is not READY");
      ready = true;
      await r.pass();
      assert.deepEqual(asked, ["vm-1@2", "vm-1@2"]);
      assert.deepEqual(
        r.decisions.map((d) => d.action),
        ["failed", "removed"],
      );
      // Still listed after a removal that succeeded: the next one waits twice as long.
      clock.advance(61_000);
      await r.pass();
      assert.equal(asked.length, 2, "120 s after the second");
      clock.advance(60_000);
      await r.pass();
      assert.equal(asked.length, 3);

      // Another controller elected: it first waits, for a removal its predecessor may have under way.
      const next = remover(store, ["vm-1"], driver, { clock });
      await next.pass();
      assert.equal(asked.length, 3);
      clock.advance(61_000);
      // Not while another process holds the election.
      await store.put(ELECTED.key, new TextEncoder().encode("another"));
      await next.pass();
      assert.equal(asked.length, 3, "not while another process is elected");
      await store.delete(ELECTED.key);
      await next.pass();
      assert.equal(asked.length, 4);

      // A node that refuses (its copy is not stale) is never asked again.
      fail = new RpcError("COPY_NOT_STALE");
      clock.advance(61_000);
      await next.pass();
      assert.equal(asked.length, 5);
      const refused = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(refused?.message.staleCopies[0]?.removalRefused, true);
      clock.advance(3_600_000);
      await next.pass();
      assert.equal(asked.length, 5);
    } finally {
      await store.close();
    }
  });
  it("waits the first 60 s again once elected again: another process may have sent a removal meanwhile", async () => {
    const store = await storeWithCopies(["vm-1"]);
    try {
      const clock = createManualClock(1_000_000);
      const asked: number[] = [];
      const driver = {
        removeStaleCopy: async () => {
          asked.push(clock.now());
        },
      };
      let term = ELECTED;
      const r = remover(store, ["vm-1"], driver, { clock, elected: () => term });
      await r.pass();
      assert.equal(asked.length, 1);
      // Another process led for a while (and may have sent one just now); this one leads again.
      clock.advance(300_000);
      const rev = await store.put(ELECTED.key, new TextEncoder().encode("this one again"));
      term = { key: ELECTED.key, modRevision: rev };
      await r.pass();
      assert.equal(asked.length, 1, "not at once: the removal sent meanwhile may be under way");
      clock.advance(61_000);
      await r.pass();
      assert.deepEqual(asked, [1_000_000, 1_361_000]);
    } finally {
      await store.close();
    }
  });

  it("takes an agent's refusal, through the agent executors, as refused: marked, and never sent again", async () => {
    const store = await storeWithCopies(["vm-1"]);
    const clock = createManualClock(1_000_000);
    const operations = createAgentOperations(store, clock);
    const executors = createAgentExecutors({
      store,
      inventory: { onNodeRemoved: () => () => {} } as unknown as Inventory, // a removal reads nothing of it
      operations,
      clock,
      logger: silentLogger,
      deliveryTimeoutMs: 5_000,
    });
    // node-a's agent refuses every removal, as operation-executor.ts does for a copy not older.
    const stop = new AbortController();
    let sent = 0;
    const agent = (async () => {
      for await (const e of store.watch("operations/node-a/", 1, { signal: stop.signal })) {
        if (e.type !== "put") continue;
        const rec = decodeMessage(OperationRecordSchema, keyValueOf(e));
        if (rec.phase !== OperationPhase.PENDING) continue;
        sent++;
        await operations.finish(
          "node-a",
          create(OperationResultSchema, {
            operationId: rec.dispatch?.operationId ?? "",
            outcome: OperationOutcome.FAILED,
            reason: "COPY_NOT_STALE",
            message: "the copy here runs under generation 2, not older than 2; not removed",
          }),
        );
      }
    })().catch(() => {});
    const r = remover(store, ["vm-1"], {}, { clock, executors });
    try {
      await r.pass();
      for (let i = 0; i < 3; i++) {
        clock.advance(16 * 60_000);
        await r.pass();
      }
      const rec = await getMessage(store, VmRecordSchema, "vms/vm-1");
      assert.equal(rec?.message.staleCopies[0]?.removalRefused, true, "the refusal is recorded");
      assert.equal(sent, 1, "one removal sent to the node that refused");
      assert.deepEqual(
        r.decisions.map((d) => d.action),
        ["failed"],
      );
    } finally {
      stop.abort();
      await agent;
      await store.close();
    }
  });
  it("does not let a due copy that may not be sent one (its node down) hold up another's, pass after pass", async () => {
    // Both copies were sent a removal before this process started; vm-1's node is down.
    const store = await storeWithCopies(["vm-1", "vm-2"], (id) => ({
      nodeId: id === "vm-1" ? "node-b" : "node-a",
      cleanupSent: true,
    }));
    try {
      const clock = createManualClock(1_000_000);
      const asked: string[] = [];
      const driver = {
        removeStaleCopy: async (id: string) => {
          asked.push(id);
          throw new RpcError("BACKEND_TIMEOUT");
        },
      };
      const r = remover(store, ["vm-1", "vm-2"], driver, {
        clock,
        executors: {
          forNode: () => driver as unknown as HypervisorDriver,
          destination: () => {
            throw new Error("not used");
          },
        },
        ready: async (node) => node !== "node-b",
      });
      for (let i = 0; i < 35; i++) {
        clock.advance(2_000);
        await r.pass();
      }
      assert.deepEqual(asked, ["vm-2"], "vm-2's copy, on a READY node, is sent its removal");
    } finally {
      await store.close();
    }
  });

  it("takes a refusal as the answer for the generation its removal carried only: once the VM moved on, the copy is sent one carrying the new generation", async () => {
    const store = await storeWithCopies(["vm-1"]);
    try {
      const clock = createManualClock(1_000_000);
      // node-a's copy runs under generation 2: it refuses a removal carrying 2, takes one carrying 3.
      const carried: bigint[] = [];
      const driver = {
        removeStaleCopy: async (_id: string, generation: bigint) => {
          carried.push(generation);
          if (generation <= 2n) throw new RpcError("COPY_NOT_STALE");
        },
      };
      const r = remover(store, ["vm-1"], driver, { clock });
      await r.pass();
      const copy = async () => (await getMessage(store, VmRecordSchema, "vms/vm-1"))?.message;
      assert.deepEqual(carried, [2n]);
      assert.equal((await copy())?.staleCopies[0]?.refusedGeneration, 2n);
      clock.advance(16 * 60_000);
      await r.pass();
      assert.deepEqual(carried, [2n], "not asked again at generation 2");
      // A failover moves vm-1 to node-d: generation 3, and node-a's copy is older than the VM.
      const moved = placementChange("vm-1", await readPlacement(store, "vm-1"), "node-d");
      await store.txn({ compares: [moved.compare], success: [moved.op] });
      await r.pass();
      assert.deepEqual(carried, [2n], "first the wait, as for any copy marked before");
      clock.advance(61_000);
      await r.pass();
      assert.deepEqual(carried, [2n, 3n]);
      assert.equal((await copy())?.staleCopies[0]?.removalRefused, false, "under way again");
      assert.deepEqual(
        r.decisions.map((d) => d.action),
        ["failed", "removed"],
      );
    } finally {
      await store.close();
    }
  });

  it("keeps a refusal recorded before refused_generation existed", async () => {
    const store = await storeWithCopies(["vm-1"], () => ({
      nodeId: "node-a",
      cleanupSent: true,
      removalRefused: true,
    }));
    try {
      const clock = createManualClock(1_000_000);
      let asked = 0;
      const driver = {
        removeStaleCopy: async () => {
          asked++;
          throw new RpcError("BACKEND_TIMEOUT");
        },
      };
      const r = remover(store, ["vm-1"], driver, { clock });
      for (let i = 0; i < 3; i++) {
        await r.pass();
        clock.advance(61_000);
      }
      assert.equal(asked, 0);
      const copy = (await getMessage(store, VmRecordSchema, "vms/vm-1"))?.message.staleCopies[0];
      assert.equal(copy?.removalRefused, true, "still adoptable by the placement from the truth");
    } finally {
      await store.close();
    }
  });
});
