import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger, systemClock } from "../core/index.js";
import { HelloSchema, OperationKind } from "../gen/debvisor/v1/agent_pb.js";
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
});
