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
import { createSqliteStore } from "../store/index.js";
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
      const delivery = createAgentDelivery({
        store,
        operations,
        clock: systemClock,
        serverId: "here",
        signal: stop.signal,
        logger: silentLogger,
        quiet: silentLogger,
        sessions,
        placedGeneration: () => undefined,
      });
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

  describe("an operation never given to a stream", () => {
    /**
     * A delivery to node-a's streams over a real store (its operations as
     * `wrap` shows them to the delivery); VMs placed at the generations in
     * `placed`.
     */
    async function openDelivery(
      placed: ReadonlyMap<string, bigint>,
      wrap: (real: AgentOperations) => AgentOperations = (real) => real,
    ) {
      const dir = mkdtempSync(join(tmpdir(), "dv-delivery-"));
      const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
      const operations = createAgentOperations(store, systemClock);
      const stop = new AbortController();
      const sessions = new Map<string, AgentSession>();
      const delivery = createAgentDelivery({
        store,
        operations: wrap(operations),
        clock: systemClock,
        serverId: "here",
        signal: stop.signal,
        logger: silentLogger,
        quiet: silentLogger,
        sessions,
        placedGeneration: (vmId) => placed.get(vmId),
      });
      await delivery.ready;
      const kinds = [OperationKind.START_VM, OperationKind.STOP_VM, OperationKind.RECOVER];
      const hello = create(HelloSchema, { capabilities: kinds.map(capabilityOf) });
      /** A new stream of node-a's, its operations read. */
      const connect = async () => {
        const session = newAgentSession("node-a", hello, 64);
        sessions.set("node-a", session);
        await delivery.resync(session);
        /** The ids dispatched on the stream within `ms`. */
        return async (ms: number) => {
          const ids: string[] = [];
          const it = session.queue[Symbol.asyncIterator]();
          const until = sleep(ms).then(() => undefined);
          for (;;) {
            const next = await Promise.race([it.next(), until]);
            if (next === undefined || next.done === true) return ids;
            if (next.value.kind?.case === "dispatch")
              ids.push((next.value.kind.value as { operationId: string }).operationId);
          }
        };
      };
      const close = async () => {
        stop.abort();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      };
      return { operations, connect, close };
    }
    const op = (id: string, kind: OperationKind, vmId: string, generation: bigint) => ({
      operationId: id,
      kind,
      vmId,
      params: {},
      generation,
    });

    it("is not sent, and ends STALE_GENERATION, when it would start a VM under a generation its placement has left", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]));
      try {
        // Queued while the node was away; the VM was placed (back) under generation 7 since.
        await d.operations.submit("node-a", op("start-5", OperationKind.START_VM, "vm-1", 5n), "t");
        await d.operations.submit(
          "node-a",
          op("recover-6", OperationKind.RECOVER, "vm-1", 6n),
          "t",
        );
        // A stop changes nothing the locks guard; a start under the current generation stands.
        await d.operations.submit("node-a", op("stop-5", OperationKind.STOP_VM, "vm-1", 5n), "t");
        await d.operations.submit("node-a", op("start-7", OperationKind.START_VM, "vm-1", 7n), "t");
        // Unknown here (no record, or the records not loaded): sent, the agent's locks decide.
        await d.operations.submit(
          "node-a",
          op("start-vm-2", OperationKind.START_VM, "vm-2", 1n),
          "t",
        );
        const sent = await d.connect();
        assert.deepEqual(await sent(1000), ["stop-5", "start-7", "start-vm-2"]);
        for (const id of ["start-5", "recover-6"]) {
          const r = await d.operations.get("node-a", id);
          assert.equal(r?.phase, OperationPhase.DONE, id);
          assert.equal(r?.result?.outcome, OperationOutcome.FAILED, id);
          assert.equal(r?.result?.reason, "STALE_GENERATION", id);
          assert.match(r?.result?.message ?? "", /placement is at 7/);
        }
      } finally {
        await d.close();
      }
    });

    it("is sent again, whatever its generation, once a stream was given it (the agent may hold it)", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]));
      try {
        await d.operations.submit("node-a", op("start-5", OperationKind.START_VM, "vm-1", 5n), "t");
        await d.operations.delivered("node-a", "start-5", "elsewhere");
        const sent = await d.connect();
        assert.deepEqual(await sent(1000), ["start-5"]);
      } finally {
        await d.close();
      }
    });

    // From an adversarial review: the refusal's write lost to another process's delivery
    // (the stream moved), and the operation was neither sent nor ended, for good.
    it("is sent after all when another process gave it to a stream between its read and its refusal", async () => {
      const d = await openDelivery(new Map([["vm-1", 7n]]), (real) => ({
        ...real,
        abandon: async (nodeId, result, signal) => {
          await real.delivered(nodeId, result.operationId, "other-process");
          return real.abandon(nodeId, result, signal);
        },
      }));
      try {
        await d.operations.submit("node-a", op("start-5", OperationKind.START_VM, "vm-1", 5n), "t");
        const sent = await d.connect();
        assert.deepEqual(await sent(1500), ["start-5"]);
        const r = await d.operations.get("node-a", "start-5");
        assert.notEqual(r?.phase, OperationPhase.DONE, "not recorded as refused");
      } finally {
        await d.close();
      }
    });

    // From the same review: the record reads "never sent" until the delivery is written.
    it("is not refused when this process gave it to the node's last stream, its delivery not written yet", async () => {
      const placed = new Map([["vm-1", 5n]]);
      let release = () => {};
      const slow = new Promise<void>((r) => {
        release = r;
      });
      const d = await openDelivery(placed, (real) => ({
        ...real,
        delivered: async (...args) => {
          await slow;
          return real.delivered(...args);
        },
      }));
      try {
        const first = await d.connect();
        await d.operations.submit("node-a", op("start-5", OperationKind.START_VM, "vm-1", 5n), "t");
        assert.deepEqual(await first(500), ["start-5"], "given to the first stream");
        // The VM moves on, and the node's agent (which may hold start-5) connects again.
        placed.set("vm-1", 7n);
        const second = await d.connect();
        assert.deepEqual(
          await second(1000),
          ["start-5"],
          "sent again: the agent's journal answers",
        );
        const r = await d.operations.get("node-a", "start-5");
        assert.notEqual(r?.phase, OperationPhase.DONE, "not recorded as refused");
      } finally {
        release();
        await d.close();
      }
    });
  });
});
