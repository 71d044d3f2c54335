// An operation that finishes while its stream resyncs (the operations watch
// was lost and the node's open operations are being read again) is not sent
// to its agent a second time: its earlier records, held during the read,
// must still find it sent. Found by an adversarial review: the stream's
// "sent" set was emptied of a finished operation before the held records
// were offered, and the dispatch, one-time transfer ticket included, went out
// again.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { silentLogger } from "../src/core/index.js";
import { OperationPhase } from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import { OperationKind, OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";

/** A SQLite store whose operations watch the test can break, and whose read of open operations it can hold. */
function controlledStore() {
  const inner = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-hub-resync-")), "state.db"),
    logger: silentLogger,
  });
  const breakers = new Set<() => void>();
  const state = { gate: undefined as Promise<void> | undefined, reads: 0, events: 0 };
  const store: KvStore = Object.create(inner);
  store.range = async (prefix, opts) => {
    if (prefix.startsWith("operations/")) {
      state.reads += 1;
      if (state.gate !== undefined) await state.gate;
    }
    return inner.range(prefix, opts);
  };
  store.watch = (prefix, from, opts) => {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    opts.signal.addEventListener("abort", onAbort, { once: true });
    let broken = false;
    const breaker = () => {
      broken = true;
      ac.abort();
    };
    breakers.add(breaker);
    return (async function* () {
      try {
        for await (const e of inner.watch(prefix, from, { ...opts, signal: ac.signal })) {
          if (prefix.startsWith("operations/")) state.events += 1;
          yield e;
        }
      } catch (err) {
        if (!broken) throw err;
      } finally {
        breakers.delete(breaker);
        opts.signal.removeEventListener("abort", onAbort);
      }
      if (broken) throw new Error("watch broken by the test");
    })();
  };
  const breakWatches = () => {
    for (const b of breakers) b();
  };
  return { store, state, breakWatches };
}

describe("agent stream resync", () => {
  const { store, state, breakWatches } = controlledStore();
  const { hub, ...hubs } = hubOn(store);
  after(async () => {
    hubs.close();
    await store.close();
  });

  it("does not send again an operation that finished while the stream re-read its open operations", async () => {
    const agent = connectInProcess(hub, "n1", ["op:start-vm"]);
    await eventually(() => hub.connectedNodes().includes("n1"));
    await hub.operations.submit(
      "n1",
      {
        operationId: "op-x",
        kind: OperationKind.START_VM,
        vmId: "",
        params: { ticket: "one-time-t1" },
        generation: 0n,
      },
      "test",
    );
    const dispatches = () =>
      agent.received.filter(
        (m) => m.kind.case === "dispatch" && m.kind.value.operationId === "op-x",
      ).length;
    await eventually(() => dispatches() === 1);
    // The watch is lost; the stream's re-read of the node's open operations is slow.
    let release = () => {};
    state.gate = new Promise<void>((r) => {
      release = r;
    });
    const reads = state.reads;
    breakWatches();
    await eventually(() => state.reads > reads);
    // Meanwhile the operation runs and finishes; the watch shows both records (held).
    const events = state.events;
    agent.send({ kind: { case: "progress", value: { operationId: "op-x", percent: 50 } } });
    await eventually(
      async () => (await hub.operations.get("n1", "op-x"))?.phase === OperationPhase.RUNNING,
    );
    agent.send({
      kind: { case: "result", value: { operationId: "op-x", outcome: OperationOutcome.SUCCEEDED } },
    });
    await eventually(
      async () => (await hub.operations.get("n1", "op-x"))?.phase === OperationPhase.DONE,
    );
    await eventually(() => state.events >= events + 2);
    state.gate = undefined;
    release();
    // The resync is over once a new operation is delivered after it.
    await hub.operations.submit(
      "n1",
      { operationId: "op-y", kind: OperationKind.START_VM, vmId: "", params: {}, generation: 0n },
      "test",
    );
    await eventually(() =>
      agent.received.some((m) => m.kind.case === "dispatch" && m.kind.value.operationId === "op-y"),
    );
    assert.equal(dispatches(), 1, "op-x, finished, was sent again");
    await agent.close();
  });
});
