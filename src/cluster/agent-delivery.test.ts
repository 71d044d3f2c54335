import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { OperationPhase } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { HelloSchema, OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createAgentDelivery } from "./agent-delivery.js";
import { type AgentOperations, createAgentOperations } from "./agent-operations.js";
import { capabilityOf } from "./agent-presence.js";
import { type AgentSession, newAgentSession } from "./agent-session.js";

const start = (id: string) => ({
  operationId: id,
  kind: OperationKind.START_VM,
  vmId: "vm-1",
  params: {},
  generation: 0n,
});

/** The delivery under test, process "here", on the system clock, logging nothing. */
const deliveryFor = (
  store: KvStore,
  operations: AgentOperations,
  sessions: Map<string, AgentSession>,
  signal: AbortSignal,
  placedGeneration: (vmId: string) => bigint | undefined,
) =>
  createAgentDelivery({
    store,
    operations,
    clock: systemClock,
    serverId: "here",
    signal,
    logger: silentLogger,
    quiet: silentLogger,
    sessions,
    placedGeneration,
  });

describe("createAgentDelivery", () => {
  it("sends a node's operations in the order submitted when a second resync comes during the first", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-delivery-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const real = createAgentOperations(store, systemClock);
    const stop = new AbortController();
    try {
      // Written before the watch starts, as while a watch was down: only a read finds it.
      await real.submit("node-a", start("op-1"), "test");
      // Each read of the open operations waits for its own release; the first answers as
      // a read made just before op-1 was written would.
      const gates: (() => void)[] = [];
      let reads = 0;
      const operations: AgentOperations = {
        ...real,
        open: async (nodeId, signal) => {
          const n = reads++;
          await new Promise<void>((r) => gates.push(r));
          return n === 0 ? [] : real.open(nodeId, signal);
        },
      };
      const sessions = new Map<string, AgentSession>();
      const delivery = deliveryFor(store, operations, sessions, stop.signal, () => undefined);
      await delivery.ready;
      const hello = create(HelloSchema, { capabilities: [capabilityOf(OperationKind.START_VM)] });
      const session = newAgentSession("node-a", hello, 64);
      sessions.set("node-a", session);
      const waitFor = async (what: string, done: () => boolean) => {
        // Bounded at ~15 s (a loaded machine); it ends as soon as `done` holds.
        for (let i = 0; i < 750 && !done(); i++) await sleep(20);
        assert.ok(done(), what);
      };
      void delivery.resync(session); // the stream's first
      await waitFor("the first read began", () => gates.length === 1);
      void delivery.resync(session); // the watch restarted meanwhile
      gates[0]?.();
      await waitFor("a second read began", () => gates.length === 2);
      await real.submit("node-a", start("op-2"), "test");
      await waitFor("the watch showed op-2", () => session.known.has("op-2"));
      gates[1]?.();
      const sent: string[] = [];
      const it = session.queue[Symbol.asyncIterator]();
      while (sent.length < 2) {
        const next = await Promise.race([it.next(), sleep(5000).then(() => undefined)]);
        if (next === undefined || next.done === true) break;
        if (next.value.kind?.case === "dispatch")
          sent.push((next.value.kind.value as { operationId: string }).operationId);
      }
      assert.deepEqual(sent, ["op-1", "op-2"], "op-2 was submitted after op-1");
    } finally {
      stop.abort();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("a start under a generation, never sent", () => {
    /**
     * A delivery to node-a's streams over a real store (its operations as
     * `wrap` shows them to the delivery); VMs placed at the generations in
     * `placed`; its watch `watchLagMs` behind the writes (as etcd's may lag
     * a txn's answer).
     */
    async function openDelivery(
      placed: ReadonlyMap<string, bigint>,
      wrap: (real: AgentOperations) => AgentOperations = (real) => real,
      watchLagMs = 0,
    ) {
      const dir = mkdtempSync(join(tmpdir(), "dv-delivery-"));
      const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
      const operations = createAgentOperations(store, systemClock);
      const stop = new AbortController();
      const sessions = new Map<string, AgentSession>();
      const lagging: KvStore = Object.create(store);
      lagging.watch = async function* (prefix, from, opts) {
        for await (const e of store.watch(prefix, from, opts)) {
          if (watchLagMs > 0) await sleep(watchLagMs);
          yield e;
        }
      };
      const delivery = deliveryFor(lagging, wrap(operations), sessions, stop.signal, (vmId) =>
        placed.get(vmId),
      );
      await delivery.ready;
      const kinds = [OperationKind.START_VM, OperationKind.STOP_VM, OperationKind.RECOVER];
      const hello = create(HelloSchema, { capabilities: kinds.map(capabilityOf) });
      /** Ends node-a's stream as the hub does (its session gone, its queue closed). */
      const endStream = () => {
        sessions.get("node-a")?.queue.close();
        sessions.delete("node-a");
      };
      /** A new stream of node-a's, its operations read; answers what it was sent. */
      const connect = async () => {
        const session = newAgentSession("node-a", hello, 64);
        sessions.set("node-a", session);
        await delivery.resync(session);
        const it = session.queue[Symbol.asyncIterator]();
        // A read still waiting when a call ends is the next call's first (else its message is lost).
        let pending: ReturnType<typeof it.next> | undefined;
        /** The dispatch ids and cancels ("cancel:<id>") sent on the stream within `ms`. */
        return async (ms: number) => {
          const out: string[] = [];
          const until = sleep(ms).then(() => undefined);
          for (;;) {
            pending ??= it.next();
            const next = await Promise.race([pending, until]);
            if (next === undefined) return out;
            pending = undefined;
            if (next.done === true) return out;
            const k = next.value.kind;
            const of = (k?.value as { operationId: string } | undefined)?.operationId;
            if (k?.case === "dispatch") out.push(of ?? "");
            if (k?.case === "cancel") out.push(`cancel:${of}`);
          }
        };
      };
      const close = async () => {
        stop.abort();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      };
      return { operations, connect, endStream, close };
    }
    const op = (id: string, kind: OperationKind, vmId: string, generation: bigint) => ({
      operationId: id,
      kind,
      vmId,
      params: {},
      generation,
    });
    const submit = (d: { operations: AgentOperations }, ...a: Parameters<typeof op>) =>
      d.operations.submit("node-a", op(...a), "t");

    it("is not sent, and ends STALE_GENERATION, when its generation is older than the placement's; the others go, in order on each VM", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]));
      try {
        // Queued while the node was away; the VM was placed (back) under generation 7 since.
        await submit(d, "start-5", OperationKind.START_VM, "vm-1", 5n);
        await submit(d, "recover-6", OperationKind.RECOVER, "vm-1", 6n);
        // A stop changes nothing the locks guard; a start under the current generation stands.
        await submit(d, "stop-5", OperationKind.STOP_VM, "vm-1", 5n);
        await submit(d, "start-7", OperationKind.START_VM, "vm-1", 7n);
        // Unknown here (no record, or the records not loaded): sent, the agent's locks decide.
        await submit(d, "start-vm-2", OperationKind.START_VM, "vm-2", 1n);
        const sent = await d.connect();
        const got = await sent(1000);
        assert.deepEqual([...got].sort(), ["start-7", "start-vm-2", "stop-5"]);
        // In order on each VM (the agent runs one VM's operations in the order they come).
        assert.deepEqual(
          got.filter((id) => id !== "start-vm-2"),
          ["stop-5", "start-7"],
        );
        for (const id of ["start-5", "recover-6"]) {
          const r = await d.operations.get("node-a", id);
          assert.equal(r?.phase, OperationPhase.DONE, id);
          assert.equal(r?.result?.outcome, OperationOutcome.FAILED, id);
          assert.equal(r?.result?.reason, "STALE_GENERATION", id);
          assert.match(r?.result?.message ?? "", /placement is at 7/);
        }
        // A start is sent only once its delivery is written: its record says so.
        assert.equal(
          (await d.operations.get("node-a", "start-7"))?.phase,
          OperationPhase.DELIVERED,
        );
      } finally {
        await d.close();
      }
    });

    it("is sent again, whatever its generation, once a stream was given it (the agent may hold it)", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]));
      try {
        await submit(d, "start-5", OperationKind.START_VM, "vm-1", 5n);
        await d.operations.delivered("node-a", "start-5", "elsewhere");
        const sent = await d.connect();
        assert.deepEqual(await sent(1000), ["start-5"]);
      } finally {
        await d.close();
      }
    });

    // From adversarial reviews of an earlier version, which refused after reading the record
    // and wrote the refusal apart: another process's delivery landing in between left the
    // start unsent, then sent after a later stop of the same VM.
    it("is sent, before the operations after it, when another process gave it a stream between its read and its claim", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]), (real) => ({
        ...real,
        delivered: async (nodeId, id, by, signal, known, refuse) => {
          if (id === "start-5") await real.delivered(nodeId, id, "other-process");
          return real.delivered(nodeId, id, by, signal, known, refuse);
        },
      }));
      try {
        await submit(d, "start-5", OperationKind.START_VM, "vm-1", 5n);
        await submit(d, "stop-7", OperationKind.STOP_VM, "vm-1", 7n);
        const sent = await d.connect();
        assert.deepEqual(await sent(1500), ["start-5", "stop-7"]);
        assert.equal((await d.operations.get("node-a", "start-5"))?.deliveries, 2);
      } finally {
        await d.close();
      }
    });

    it("holds the operations after it, and a cancel asked meanwhile, until its delivery is written; a failed write is tried again", async () => {
      let release = () => {};
      const slow = new Promise<void>((r) => {
        release = r;
      });
      let failures = 1;
      const d = await openDelivery(new Map([["vm-1", 7n]]), (real) => ({
        ...real,
        delivered: async (nodeId, id, by, signal, known, refuse) => {
          if (id === "start-7") {
            await slow;
            if (failures-- > 0) throw new Error("store unavailable");
          }
          return real.delivered(nodeId, id, by, signal, known, refuse);
        },
      }));
      try {
        const sent = await d.connect();
        await submit(d, "stop-1", OperationKind.STOP_VM, "vm-2", 0n);
        assert.deepEqual(await sent(500), ["stop-1"]);
        await submit(d, "start-7", OperationKind.START_VM, "vm-1", 7n);
        await submit(d, "stop-7", OperationKind.STOP_VM, "vm-1", 7n);
        await d.operations.requestCancel("node-a", "start-7");
        // stop-1 runs and ends while start-7's claim holds the stream's records: the record of
        // it running, held, is not taken for one never sent once the claim is done.
        await d.operations.progress("node-a", {
          $typeName: "debvisor.v1.OperationProgress",
          operationId: "stop-1",
          percent: 50,
          phase: "stopping",
          message: "",
        });
        await d.operations.finish("node-a", {
          $typeName: "debvisor.v1.OperationResult",
          operationId: "stop-1",
          outcome: OperationOutcome.SUCCEEDED,
          reason: "",
          message: "",
          replayed: false,
        });
        assert.deepEqual(await sent(500), [], "nothing overtakes the start");
        release();
        assert.deepEqual(await sent(1500), ["start-7", "stop-7", "cancel:start-7"]);
        assert.equal(
          (await d.operations.get("node-a", "start-7"))?.phase,
          OperationPhase.DELIVERED,
        );
      } finally {
        release();
        await d.close();
      }
    });

    // From an adversarial review of the version that held every record of the stream.
    describe("while its claim is written", () => {
      /** A delivery whose claims of `slowId` wait for the returned release. */
      async function withSlowClaim(placed: ReadonlyMap<string, bigint>, slowId: string) {
        let release = () => {};
        const slow = new Promise<void>((r) => {
          release = r;
        });
        const d = await openDelivery(placed, (real) => ({
          ...real,
          delivered: async (nodeId, id, by, signal, known, refuse) => {
            if (id === slowId) await slow;
            return real.delivered(nodeId, id, by, signal, known, refuse);
          },
        }));
        return { d, release: () => release() };
      }

      it("another VM's operations go on; the same VM's, abandoned meanwhile, are never sent", async () => {
        const { d, release } = await withSlowClaim(new Map([["vm-1", 7n]]), "start-7");
        try {
          const sent = await d.connect();
          await submit(d, "start-7", OperationKind.START_VM, "vm-1", 7n);
          await submit(d, "stop-7", OperationKind.STOP_VM, "vm-1", 7n);
          await submit(d, "stop-vm2", OperationKind.STOP_VM, "vm-2", 0n);
          assert.deepEqual(await sent(500), ["stop-vm2"], "vm-2 does not wait for vm-1's claim");
          // stop-7's caller gave up on it: ended, never delivered later.
          const ended = await d.operations.abandon("node-a", {
            $typeName: "debvisor.v1.OperationResult",
            operationId: "stop-7",
            outcome: OperationOutcome.FAILED,
            reason: "BACKEND_UNAVAILABLE",
            message: "not taken in time",
            replayed: false,
          });
          assert.ok(ended);
          await sleep(200);
          release();
          assert.deepEqual(await sent(1000), ["start-7"]);
        } finally {
          release();
          await d.close();
        }
      });

      it("a cancel asked for a stale start is not sent: the start never was", async () => {
        const { d, release } = await withSlowClaim(new Map([["vm-1", 7n]]), "start-5");
        try {
          const sent = await d.connect();
          await submit(d, "start-5", OperationKind.START_VM, "vm-1", 5n);
          await d.operations.requestCancel("node-a", "start-5");
          await sleep(200);
          release();
          assert.deepEqual(await sent(1000), []);
          const r = await d.operations.get("node-a", "start-5");
          assert.equal(r?.result?.reason, "STALE_GENERATION");
        } finally {
          release();
          await d.close();
        }
      });

      // From a review of 00617c0: with the watch behind, the refusal's own DONE was forgotten
      // before the watch's older record (asking a cancel) came, which was then claimed again.
      it("no cancel for a stale start when the cancel came just before its claim and the watch lags", async () => {
        let first = true;
        const d = await openDelivery(
          new Map([["vm-1", 7n]]),
          (real) => ({
            ...real,
            delivered: async (nodeId, id, by, signal, known, refuse) => {
              if (id === "start-5" && first) {
                first = false;
                await real.requestCancel(nodeId, id);
              }
              return real.delivered(nodeId, id, by, signal, known, refuse);
            },
          }),
          150,
        );
        try {
          const sent = await d.connect();
          await submit(d, "start-5", OperationKind.START_VM, "vm-1", 5n);
          assert.deepEqual(await sent(1500), []);
          const r = await d.operations.get("node-a", "start-5");
          assert.equal(r?.result?.reason, "STALE_GENERATION");
        } finally {
          await d.close();
        }
      });
    });
  });
});
