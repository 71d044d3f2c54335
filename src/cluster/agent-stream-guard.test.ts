import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { type AgentPresence, createAgentPresence } from "./agent-presence.js";
import { type GuardedStream, guardStreams } from "./agent-stream-guard.js";

/** A guard on a real SQLite store, counting its presence reads; `gate` holds the watch's start. */
function setUp(gate?: Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), "dv-stream-guard-"));
  const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const store: KvStore = Object.create(real);
  if (gate !== undefined)
    store.revision = async (opts) => {
      await gate;
      return real.revision(opts);
    };
  const presence = createAgentPresence(real);
  let reads = 0;
  const counted: AgentPresence = {
    ...presence,
    current: (nodeId, signal) => {
      reads++;
      return presence.current(nodeId, signal);
    },
  };
  const held = new Map<string, GuardedStream>();
  const stop = new AbortController();
  const guard = guardStreams({
    store,
    presence: counted,
    serverId: "here",
    signal: stop.signal,
    logger: silentLogger,
    held: (nodeId) => held.get(nodeId),
    all: () => held.entries(),
  });
  const write = (serverId: string) =>
    presence.connected("node-a", create(AgentPresenceRecordSchema, { serverId }));
  const stream = (presenceRevision: number) => {
    const s = { presenceRevision, replacedBy: "", replace: (by: string) => (s.replacedBy = by) };
    return s;
  };
  return {
    guard,
    held,
    write,
    stream,
    reads: () => reads,
    async close() {
      stop.abort();
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("guardStreams", () => {
  it("ends a stream whose node connected elsewhere while its Hello was in progress, without a read", async () => {
    const t = setUp();
    try {
      await sleep(200); // the watch follows
      const opening = t.guard.opening("node-a");
      const ours = await t.write("here");
      await t.write("replica-2");
      await sleep(200); // the watch shows replica-2's write before the stream registers
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      assert.equal(s.replacedBy, "replica-2", "the stream ends: the node is replica-2's now");
      assert.equal(t.reads(), 0, "no presence read per stream");
    } finally {
      await t.close();
    }
  });

  it("keeps a stream whose Hello came after the other process's", async () => {
    const t = setUp();
    try {
      await sleep(200);
      const opening = t.guard.opening("node-a");
      await t.write("replica-2");
      const ours = await t.write("here");
      await sleep(200);
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      await sleep(50);
      assert.equal(s.replacedBy, "", "the later Hello holds the node");
      // A connection elsewhere after registration still ends it.
      await t.write("replica-3");
      for (let i = 0; i < 100 && s.replacedBy === ""; i++) await sleep(20);
      assert.equal(s.replacedBy, "replica-3");
    } finally {
      await t.close();
    }
  });

  it("reads the record of a stream that opened before the watch followed", async () => {
    let open = () => {};
    const t = setUp(new Promise((r) => (open = r)));
    try {
      const opening = t.guard.opening("node-a");
      const ours = await t.write("here");
      await t.write("replica-2"); // before the watch's first revision: it never shows it
      open();
      await sleep(200);
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      for (let i = 0; i < 100 && s.replacedBy === ""; i++) await sleep(20);
      assert.equal(s.replacedBy, "replica-2");
      assert.equal(t.reads(), 1);
    } finally {
      await t.close();
    }
  });
});
