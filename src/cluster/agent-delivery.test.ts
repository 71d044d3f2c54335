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

  describe("an operation never sent", () => {
    /** A delivery to node-a's stream over a real store; VMs placed at the generations in `placed`. */
    async function openDelivery(placed: ReadonlyMap<string, bigint>) {
      const dir = mkdtempSync(join(tmpdir(), "dv-delivery-"));
      const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
      const operations = createAgentOperations(store, systemClock);
      const stop = new AbortController();
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
        placedGeneration: (vmId) => placed.get(vmId),
      });
      await delivery.ready;
      const kinds = [OperationKind.START_VM, OperationKind.STOP_VM, OperationKind.RECOVER];
      const hello = create(HelloSchema, { capabilities: kinds.map(capabilityOf) });
      const session = newAgentSession("node-a", hello, 64);
      /** The ids dispatched on the stream within `ms`. */
      const sent = async (ms: number) => {
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
      const connect = async () => {
        sessions.set("node-a", session);
        await delivery.resync(session);
      };
      const close = async () => {
        stop.abort();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      };
      return { operations, connect, sent, close };
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
        await d.connect();
        assert.deepEqual(await d.sent(1000), ["stop-5", "start-7", "start-vm-2"]);
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
        await d.connect();
        assert.deepEqual(await d.sent(1000), ["start-5"]);
      } finally {
        await d.close();
      }
    });

    it("is not sent when its cancellation was asked meanwhile, and ends CANCELLED", async () => {
      const d = await openDelivery(new Map());
      try {
        await d.operations.submit("node-a", op("start-0", OperationKind.START_VM, "vm-1", 0n), "t");
        await d.operations.submit("node-a", op("stop-0", OperationKind.STOP_VM, "vm-1", 0n), "t");
        await d.operations.requestCancel("node-a", "start-0");
        await d.connect();
        assert.deepEqual(await d.sent(1000), ["stop-0"]);
        const r = await d.operations.get("node-a", "start-0");
        assert.equal(r?.result?.outcome, OperationOutcome.CANCELLED);
      } finally {
        await d.close();
      }
    });
  });
});
